"""A first ingest's decode and encode on a Ray cluster (``vizdex ingest DIR --ray ...``).

Discovery and the incremental plan stay on the driver (``Indexer._items``): files already
indexed at the same path, size and mtime pass through without leaving it. The others go, a page
at a time, through the same Ray Data pipeline as a back-fill (``ray_embed``: decode tasks that
also hash the file and make its thumbnail, an encoder actor pool), and come back as the
``EncodedBatch``es the local stream makes, so the same ``BatchWriter`` commits them: rows and
vectors in one transaction per batch, content the collection already has recorded as moved or
duplicate, each failure on its file. A killed driver is resumed by running the ingest again.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator, Sequence

from vizdex.core.errors import ImageRejectedError, InvalidInputError
from vizdex.encoders.base import Encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.encoders.streaming import EncodedBatch, draft_side
from vizdex.imaging import ImageInputSettings
from vizdex.indexer.ray_embed import RayBatch, RayWork, Thumbnails, embed_on_ray
from vizdex.indexer.settings import IndexerSettings
from vizdex.indexer.sources import Fresh, Item, Known, PathItem, Payload, Unchanged
from vizdex.indexer.storage import DataStore
from vizdex.search import Catalog

PAGE_BATCHES = 16  # encoder batches per page handed to Ray at once (as a back-fill's)


def ray_work(
    models: Sequence[str],
    encoders: Sequence[Encoder],
    settings: IndexerSettings,
    images: ImageInputSettings,
) -> RayWork:
    """The cluster's share of an ingest of a collection with ``models`` (its ``encoders``)."""
    return RayWork(
        models=tuple(
            (
                model,
                EncoderSettings(
                    models=(model,),
                    device=encoder.device.type,
                    dtype=encoder.precision.value,
                    batch_size=settings.batch_size,
                ),
            )
            for model, encoder in zip(models, encoders, strict=True)
        ),
        images=images,
        batch_size=settings.batch_size,
        draft=draft_side(encoders),
        gpus=1.0 if any(encoder.device.type == "cuda" for encoder in encoders) else 0.0,
        thumbnails=Thumbnails(settings.thumbnail_size, settings.thumbnail_quality),
    )


class RayIngestStream:
    """``EncodedBatch``es for an ingest's items, embedded on the cluster."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        collection_id: int,
        store: DataStore,
        work: RayWork,
        encoders: Sequence[Encoder],
    ) -> None:
        self._catalog = catalog
        self._collection_id = collection_id
        self._store = store
        self._work = work
        # The writer reads vectors by encoder name; the cluster returns them by model name.
        self._names = {
            model: encoder.name for (model, _), encoder in zip(work.models, encoders, strict=True)
        }

    def __call__(self, items: Iterable[Item]) -> Generator[EncodedBatch[Item, Payload], None, None]:
        page: list[Item] = []
        size = self._work.batch_size * PAGE_BATCHES
        for item in items:
            page.append(item)
            if len(page) >= size:
                yield from self._page(page)
                page = []
        if page:
            yield from self._page(page)

    def _page(self, page: Sequence[Item]) -> Iterator[EncodedBatch[Item, Payload]]:
        unchanged: list[tuple[Item, Payload]] = []
        todo: list[PathItem] = []
        for item in page:
            if not isinstance(item, PathItem):
                raise InvalidInputError("an ingest on Ray takes folders and files only")
            if item.known_id is not None:
                unchanged.append((item, Unchanged(item.known_id)))
            else:
                todo.append(item)
        if unchanged:
            yield EncodedBatch(passed=unchanged)
        if todo:
            rows = [(key, item.path) for key, item in enumerate(todo)]
            for batch in embed_on_ray(rows, self._work):
                yield self._encoded(todo, batch)

    def _encoded(self, todo: Sequence[PathItem], batch: RayBatch) -> EncodedBatch[Item, Payload]:
        out: EncodedBatch[Item, Payload] = EncodedBatch()
        out.failures = [
            (todo[key], ImageRejectedError(message, code=code))
            for key, code, message in batch.failures
        ]
        # Content the collection already has is recorded by the writer (moved, duplicate), as
        # the local loader's ``Known``; the cluster's vectors for it are dropped.
        known = self._catalog.find_by_sha256(
            self._collection_id, [facts.sha256 for facts in batch.facts]
        )
        keep = []
        for row, (key, facts) in enumerate(zip(batch.keys.tolist(), batch.facts, strict=True)):
            item = todo[key]
            if facts.sha256 in known:
                payload = Known(facts.sha256, known[facts.sha256], facts.size, facts.mtime_ns)
                out.passed.append((item, payload))
                continue
            thumbnail = self._store.thumbnail_name(facts.sha256)
            stored = self._store.has(thumbnail)
            out.items.append(item)
            out.payloads.append(
                Fresh(
                    sha256=facts.sha256,
                    width=facts.width,
                    height=facts.height,
                    format=facts.format,
                    byte_size=facts.byte_size,
                    thumbnail=thumbnail,
                    size=facts.size,
                    mtime_ns=facts.mtime_ns,
                    thumbnail_data=None if stored else facts.thumbnail,
                )
            )
            out.previews.append(None)
            keep.append(row)
        out.vectors = {
            self._names[model]: vectors[keep] for model, vectors in batch.vectors.items()
        }
        return out
