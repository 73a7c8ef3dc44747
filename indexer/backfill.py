"""Back-fill: give every image already in a collection its vector of a newly added model.

The work list is the catalog itself (``Catalog.images_lacking``: images without the model's
vector, in id order), so a back-fill killed at any point (kill -9 included) resumes where it
stopped: whatever it committed is no longer lacking, and nothing is embedded twice. Each batch is
read from the stored originals (or the folder paths), passed through the image door, encoded,
and written in one transaction (``put_embeddings``); an image that cannot be read fails alone.

Throttle (``indexer.throttle``): after a batch that took ``t`` seconds the back-fill rests
``t * (1 - share) / share``, so it holds the device at most ``share`` of the time and queries keep
their latency.

When nothing is lacking, ``mark_ready`` flips the model to ``ready`` under the collection lock;
images whose files failed keep it ``backfilling`` (the job lists them): delete or re-upload them
and add the model again to finish.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL.Image import Image as PILImage

from vizdex.core.errors import VizdexError
from vizdex.encoders.base import Encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.encoders.streaming import draft_side
from vizdex.imaging import ImageInputSettings, decode_image_bytes
from vizdex.indexer.jobs import JobTracker
from vizdex.indexer.ray_embed import RayWork, embed_on_ray
from vizdex.indexer.settings import IndexerSettings
from vizdex.indexer.storage import DataStore
from vizdex.indexer.throttle import Clock, Rest, Throttle, rest_unless_cancelled
from vizdex.search import (
    Catalog,
    ImageNotFoundError,
    ImageRecord,
    IndexStore,
    JobFailure,
)

log = logging.getLogger(__name__)

RAY_PAGE_BATCHES = 16  # batches per page of the work list handed to Ray at once
# (done, total) after each batch, for the CLI's bar.
BackfillProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class BackfillOptions:
    batch_size: int = 32
    share: float = 0.5  # of the device: VIZDEX_BACKFILL_SHARE
    workers: int = 2  # decode threads
    ray_address: str | None = None  # run the batches on this Ray cluster (indexer.ray_embed)

    @classmethod
    def of(cls, settings: IndexerSettings, ray_address: str | None = None) -> BackfillOptions:
        return cls(
            batch_size=settings.batch_size,
            share=settings.backfill_share,
            workers=max(1, settings.workers or 2),
            ray_address=ray_address,
        )


@dataclass(frozen=True)
class BackfillOutcome:
    done: int
    failed: int
    ready: bool


def _decode(
    record: ImageRecord, store: DataStore, images: ImageInputSettings, min_side: int | None
) -> PILImage | JobFailure:
    item = record.original_name or f"image {record.id}"
    path = store.image_file(record)
    try:
        if path is None:
            raise FileNotFoundError("no file is recorded for it")
        data = path.read_bytes()
    except OSError as error:
        return JobFailure(item, "file_missing", f"image {record.id}: cannot read {path}: {error}")
    try:
        return decode_image_bytes(data, images, min_side=min_side).image
    except VizdexError as error:
        return JobFailure(item, error.code, f"image {record.id}: {error.message}")


class Backfill:
    """One model's back-fill of one collection; ``run`` until done, cancelled or failed."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        indexes: IndexStore | None,
        store: DataStore,
        encoder: Encoder,
        images: ImageInputSettings,
        options: BackfillOptions,
        clock: Clock = time.monotonic,
        rest: Rest = rest_unless_cancelled,
    ) -> None:
        """``clock`` and ``rest``: the throttle's (tests check its accounting with their own)."""
        self.throttle = Throttle(
            options.share, clock=clock, **({} if rest is None else {"rest": rest})
        )
        self._catalog = catalog
        self._indexes = indexes
        self._store = store
        self._encoder = encoder
        self._images = images
        self._options = options

    def run(
        self,
        collection_id: int,
        model: str,
        tracker: JobTracker,
        cancel: threading.Event,
        progress: BackfillProgress | None = None,
    ) -> BackfillOutcome:
        catalog = self._catalog
        total = catalog.count_lacking(collection_id, model)
        tracker.set_total(total)
        done = 0
        failed: set[int] = set()
        ready = False
        with ThreadPoolExecutor(max(1, self._options.workers), "vizdex-backfill") as pool:
            # A second pass only for images a writer that read the collection before the model
            # was added committed without its vector (``mark_ready`` saw them).
            for _ in range(3):
                after = 0
                while not cancel.is_set():
                    rows = catalog.images_lacking(
                        collection_id, model, after_id=after, limit=self._page_size
                    )
                    if not rows:
                        break
                    after = rows[-1].id
                    batch = [record for record in rows if record.id not in failed]
                    with self.throttle.batch(cancel):
                        if self._options.ray_address is not None:
                            written, failures = self._ray_page(collection_id, model, batch)
                        else:
                            written, failures = self._batch(collection_id, model, batch, pool)
                    failed.update(failure_id for failure_id, _ in failures)
                    done += written
                    tracker.add(done=written, failures=[failure for _, failure in failures])
                    if progress is not None:
                        progress(done + len(failed), total)
                if cancel.is_set():
                    break
                ready = catalog.mark_ready(collection_id, model)
                if ready or catalog.count_lacking(collection_id, model) <= len(failed):
                    break
        tracker.flush()
        self._sync(collection_id)
        return BackfillOutcome(done=done, failed=len(failed), ready=ready)

    @property
    def _page_size(self) -> int:
        # On Ray a page is many batches, so the cluster's workers all have work.
        scale = RAY_PAGE_BATCHES if self._options.ray_address is not None else 1
        return self._options.batch_size * scale

    def _ray_page(
        self, collection_id: int, model: str, page: Sequence[ImageRecord]
    ) -> tuple[int, list[tuple[int, JobFailure]]]:
        """One page of the work list through Ray: decode tasks, an encoder actor pool."""
        failures: list[tuple[int, JobFailure]] = []
        rows: list[tuple[int, str]] = []
        names = {record.id: record.original_name or f"image {record.id}" for record in page}
        for record in page:
            path = self._store.image_file(record)
            if path is None:
                failures.append(
                    (record.id, JobFailure(names[record.id], "file_missing", "no file recorded"))
                )
            else:
                rows.append((record.id, str(path)))
        settings = EncoderSettings(
            models=(model,),
            device=self._encoder.device.type,
            dtype=self._encoder.precision.value,
            batch_size=self._options.batch_size,
        )
        work = RayWork(
            models=((model, settings),),
            images=self._images,
            batch_size=self._options.batch_size,
            draft=draft_side([self._encoder]),
            gpus=1.0 if self._encoder.device.type == "cuda" else 0.0,
        )
        written = 0
        for batch in embed_on_ray(rows, work):
            failures.extend(
                (image_id, JobFailure(names[image_id], code, f"image {image_id}: {message}"))
                for image_id, code, message in batch.failures
            )
            written += self._write(collection_id, model, batch.keys.tolist(), batch.vectors[model])
        return written, failures

    def _batch(
        self,
        collection_id: int,
        model: str,
        batch: Sequence[ImageRecord],
        pool: ThreadPoolExecutor,
    ) -> tuple[int, list[tuple[int, JobFailure]]]:
        """Decode, encode and write one batch: (vectors written, (image id, failure) pairs)."""
        # JPEGs decode at the reduced scale an ingest with this model alone would use.
        side = draft_side([self._encoder])
        decoded = list(
            pool.map(lambda record: _decode(record, self._store, self._images, side), batch)
        )
        failures = [
            (record.id, outcome)
            for record, outcome in zip(batch, decoded, strict=True)
            if isinstance(outcome, JobFailure)
        ]
        good = [
            (record.id, image)
            for record, image in zip(batch, decoded, strict=True)
            if not isinstance(image, JobFailure)
        ]
        if not good:
            return 0, failures
        ids = [image_id for image_id, _ in good]
        vectors = self._encoder.encode_images([image for _, image in good])
        return self._write(collection_id, model, ids, vectors), failures

    def _write(self, collection_id: int, model: str, ids: list[int], vectors: np.ndarray) -> int:
        """Commits one batch of vectors (images deleted meanwhile dropped); how many went."""
        while ids:
            try:
                self._catalog.put_embeddings(
                    collection_id, model, ids, vectors, precision=self._encoder.precision
                )
            except ImageNotFoundError as error:  # deleted meanwhile: the rest still need theirs
                gone = set(error.details.get("image_ids", ())) or set(ids)
                keep = [i for i, image_id in enumerate(ids) if image_id not in gone]
                ids, vectors = [ids[i] for i in keep], np.asarray(vectors)[keep]
                continue
            self._sync(collection_id)
            break
        return len(ids)

    def _sync(self, collection_id: int) -> None:
        if self._indexes is not None:
            self._indexes.sync(self._catalog.get_collection_by_id(collection_id))
