"""Turn encoded batches into catalog writes, then bring the indexes up to date.

Per batch: new images with all their vectors in ONE transaction (``Catalog.add_images``: rows and
embeddings together, acknowledged = committed); then moved/touched files get their new path or
stat; then images that a changed path no longer holds are deleted; then the indexes replay the
catalog. Every step is idempotent and ordered so that a crash between two of them leaves a state
the next run settles: e.g. a changed file whose new row committed but whose old row was not yet
deleted shows up as two rows for one path, and the rescan deletes the one that does not match.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from vizdex.core.precision import Precision
from vizdex.core.stage_clock import StageClock
from vizdex.encoders.streaming import EncodedBatch
from vizdex.indexer.jobs import JobTracker
from vizdex.indexer.loading import url_file_name
from vizdex.indexer.report import IngestReport, UploadOutcome
from vizdex.indexer.sources import (
    Fresh,
    Item,
    Known,
    PathItem,
    Payload,
    Unchanged,
    UploadItem,
    UrlItem,
    display_name,
)
from vizdex.indexer.thumbnail_sink import ThumbnailSink
from vizdex.search import (
    Catalog,
    CollectionRecord,
    IndexStore,
    JobFailure,
    NewImage,
    SourceKind,
    SourceUpdate,
    images_at_sources,
    update_sources,
)

log = logging.getLogger(__name__)


@dataclass
class _Source:
    """Where an image is recorded as coming from, as this batch has left it."""

    kind: SourceKind
    uri: str | None
    size: int | None
    mtime_ns: int | None


def _still_there(path: str, size: int | None, mtime_ns: int | None) -> bool:
    """Whether ``path`` still looks like the file that was indexed from it.

    Unreadable counts as there: a folder we may not read is no proof that a file moved.
    """
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True
    return (info.st_size, info.st_mtime_ns) == (size, mtime_ns)


class BatchWriter:
    """Writes the batches of one job, in order, from one thread."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        indexes: IndexStore | None,
        collection: CollectionRecord,
        model_keys: Sequence[str],
        report: IngestReport,
        tracker: JobTracker,
        on_batch: Callable[[], None] | None = None,
        thumbnails: ThumbnailSink | None = None,
        clock: StageClock | None = None,
        precisions: Mapping[str, Precision] | None = None,
    ) -> None:
        self._catalog = catalog
        self._indexes = indexes
        self._collection = collection
        # encode_stream keys vectors by encoder name; the catalog by the collection's model names.
        self._model_keys = dict(zip(collection.models, model_keys, strict=True))
        self._report = report
        self._tracker = tracker
        self._on_batch = on_batch
        self._thumbnails = thumbnails  # None: the caller stores thumbnails itself (tests)
        self._clock = clock or StageClock()
        # collection model -> precision of the encoder making its vectors, recorded with them.
        self._precisions = dict(precisions or {})
        self.retry: list[Item] = []  # content that vanished from the catalog while in flight

    def write(self, batch: EncodedBatch[Item, Payload]) -> None:
        report = self._report
        done_before, skipped_before = report.done, report.skipped
        failures = [self._failed(item, error.code, error.message) for item, error in batch.failures]
        holders: dict[str, int | None] = {}  # path -> image now holding it (paths with old rows)
        added = self._add_fresh(batch, holders, failures)
        self._settle_passed(batch.passed, holders)
        removed = self._remove_stale(holders)
        if (added or removed) and self._indexes is not None:
            with self._clock.stage("index update"):
                self._indexes.sync(self._collection)
        self._tracker.add(
            done=report.done - done_before,
            skipped=report.skipped - skipped_before,
            failures=failures,
        )
        if self._on_batch is not None:
            self._on_batch()

    # -- outcomes ------------------------------------------------------------------------------

    def fail(self, items: Sequence[Item], code: str, message: str) -> None:
        """Fail ``items`` outside a batch (e.g. what could not be retried), all for one reason."""
        self._tracker.add(failures=[self._failed(item, code, message) for item in items])

    def _failed(self, item: Item, code: str, message: str) -> JobFailure:
        failure = JobFailure(item=display_name(item), code=code, message=message)
        self._report.add_failure(failure)
        self._upload(item, "failed", code=code, message=message)
        return failure

    def _upload(self, item: Item, status: str, **fields: Any) -> None:
        """The outcome of an item the request sent (an upload or a URL), for its answer."""
        if isinstance(item, UploadItem):
            name = item.upload.name
        elif isinstance(item, UrlItem):
            name = item.url
        else:
            return
        self._report.uploads.append(
            UploadOutcome(index=item.index, name=name, status=status, **fields)
        )

    def _duplicate(self, item: Item, image_id: int) -> None:
        self._report.duplicates += 1
        self._upload(item, "duplicate", image_id=image_id)

    # -- new content ---------------------------------------------------------------------------

    def _add_fresh(
        self,
        batch: EncodedBatch[Item, Payload],
        holders: dict[str, int | None],
        failures: list[JobFailure],
    ) -> int:
        if not batch.items:
            return 0
        # A model that overflowed (e.g. float16) fails that image, not the whole batch.
        finite = np.ones(len(batch.items), dtype=bool)
        for key in self._model_keys.values():
            finite &= np.isfinite(batch.vectors[key]).all(axis=1)
        no_thumbnail: set[str] = set()
        if self._thumbnails is not None:  # files first: a committed row never names a missing one
            previews = batch.previews or [None] * len(batch.payloads)
            with self._clock.stage("thumbnails"):
                no_thumbnail = self._thumbnails.write(batch.payloads, previews)
        carried = self._carried_metadata(
            [item.path for item in batch.items if isinstance(item, PathItem) and item.other_rows]
        )
        kept: list[Item] = []
        images = []
        for row, (item, payload) in enumerate(zip(batch.items, batch.payloads, strict=True)):
            if not isinstance(payload, Fresh):
                raise TypeError(f"an encoded item must carry a Fresh payload, not {payload!r}")
            if not finite[row]:
                message = "the model produced invalid numbers (NaN or infinity) for this image"
                failures.append(self._failed(item, "encode_failed", message))
                continue
            vectors = {
                model: np.asarray(batch.vectors[key][row])
                for model, key in self._model_keys.items()
            }
            kept.append(item)
            image = self._new_image(item, payload, vectors, carried)
            if payload.thumbnail in no_thumbnail:
                image = replace(image, thumbnail_path=None)
            images.append(image)
        with self._clock.stage("catalog write"):
            outcomes = self._catalog.add_images(
                self._collection.id, images, precisions=self._precisions
            )
        created = 0
        for item, outcome in zip(kept, outcomes, strict=True):
            if outcome.created:
                created += 1
                self._report.indexed += 1
                self._upload(item, "indexed", image_id=outcome.id)
            else:  # the same content earlier in this batch, or committed meanwhile
                self._duplicate(item, outcome.id)
            if isinstance(item, PathItem) and item.other_rows:
                holders[item.path] = outcome.id if outcome.created else None
        return created

    @staticmethod
    def _new_image(
        item: Item,
        payload: Fresh,
        vectors: Mapping[str, np.ndarray],
        carried: Mapping[str, Mapping[str, Any]],
    ) -> NewImage:
        common: dict[str, Any] = {
            "sha256": payload.sha256,
            "width": payload.width,
            "height": payload.height,
            "format": payload.format,
            "byte_size": payload.byte_size,
            "vectors": vectors,
            "thumbnail_path": payload.thumbnail,
        }
        if isinstance(item, PathItem):
            return NewImage(
                **common,
                source_kind=SourceKind.PATH,
                source_uri=item.path,
                original_name=os.path.basename(item.path),
                source_size=payload.size,
                source_mtime_ns=payload.mtime_ns,
                metadata=carried.get(item.path, {}),
            )
        if isinstance(item, UrlItem):
            return NewImage(
                **common,
                source_kind=SourceKind.URL,
                source_uri=item.url,
                original_name=url_file_name(item.url),
            )
        return NewImage(
            **common,
            source_kind=SourceKind.UPLOAD,
            original_name=item.upload.name,
            metadata=item.upload.metadata,
        )

    def _carried_metadata(self, paths: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        """User metadata of the image a changed file replaces: it describes the same file."""
        if not paths:
            return {}
        rows = images_at_sources(self._catalog, self._collection.id, paths)
        latest = {path: found[-1].image_id for path, found in rows.items() if found}
        records = self._catalog.get_images(self._collection.id, latest.values())
        return {
            path: records[image_id].metadata
            for path, image_id in latest.items()
            if image_id in records and records[image_id].metadata
        }

    # -- content the collection already has ----------------------------------------------------

    def _settle_passed(
        self, passed: Sequence[tuple[Item, Payload]], holders: dict[str, int | None]
    ) -> None:
        known_ids = [payload.image_id for _, payload in passed if isinstance(payload, Known)]
        records = self._catalog.get_images(self._collection.id, known_ids) if known_ids else {}
        sources = {
            image_id: _Source(r.source_kind, r.source_uri, r.source_size, r.source_mtime_ns)
            for image_id, r in records.items()
        }
        updates: dict[int, SourceUpdate] = {}
        for item, payload in passed:
            if isinstance(payload, Unchanged):
                self._report.unchanged += 1
                if isinstance(item, PathItem) and item.other_rows:
                    holders[item.path] = payload.image_id
                self._upload(item, "duplicate", image_id=payload.image_id)  # a URL sent again
                continue
            if isinstance(payload, Fresh):
                raise TypeError("a Fresh payload must have been encoded")
            source = sources.get(payload.image_id)
            if source is None:  # deleted since the loader looked it up: embed it after all
                self.retry.append(item)
                continue
            if not isinstance(item, PathItem):
                self._duplicate(item, payload.image_id)
                continue
            holder = self._settle_path(item, payload, source, updates)
            if item.other_rows:
                holders[item.path] = holder
        update_sources(self._catalog, self._collection.id, list(updates.values()))

    def _settle_path(
        self,
        item: PathItem,
        payload: Known,
        source: _Source,
        updates: dict[int, SourceUpdate],
    ) -> int | None:
        """Touched, moved or duplicate; returns the image the path now holds (None: none)."""
        image_id = payload.image_id
        stat = (payload.size, payload.mtime_ns)
        if source.kind is SourceKind.PATH and source.uri == item.path:
            if (source.size, source.mtime_ns) == stat:
                self._report.unchanged += 1  # the same file twice in one run (e.g. a link)
            else:
                self._report.updated += 1
                self._record(image_id, item, payload, source, updates)
            return image_id
        if (
            source.kind is SourceKind.PATH
            and source.uri is not None
            and not _still_there(source.uri, source.size, source.mtime_ns)
        ):
            log.info("moved: %s -> %s", source.uri, item.path)
            self._report.moved += 1
            self._record(image_id, item, payload, source, updates)
            return image_id
        self._duplicate(item, image_id)
        return None

    @staticmethod
    def _record(
        image_id: int,
        item: PathItem,
        payload: Known,
        source: _Source,
        updates: dict[int, SourceUpdate],
    ) -> None:
        source.uri, source.size, source.mtime_ns = item.path, payload.size, payload.mtime_ns
        updates[image_id] = SourceUpdate(
            image_id=image_id,
            source_uri=item.path,
            original_name=os.path.basename(item.path),
            size=payload.size,
            mtime_ns=payload.mtime_ns,
        )

    # -- leftovers -----------------------------------------------------------------------------

    def _remove_stale(self, holders: Mapping[str, int | None]) -> int:
        """Delete images recorded at paths that now hold other content (or nothing we keep)."""
        if not holders:
            return 0
        rows = images_at_sources(self._catalog, self._collection.id, list(holders))
        stale = [
            row.image_id
            for path, found in rows.items()
            for row in found
            if row.image_id != holders[path]
        ]
        if not stale:
            return 0
        return len(self._catalog.delete_images(self._collection.id, stale))
