"""Writes each batch's thumbnails just before the batch's rows are committed.

The loader makes WebP bytes itself when it decoded the image on the CPU; for JPEGs decoded on
the GPU it never sees the pixels, and the stream hands over a small preview instead, which is
encoded here in a thread pool (WebP costs milliseconds per image, too much for one thread at
GPU ingest rates). Each file is fsynced as it is written; each folder once per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait

from PIL import Image

from vizdex.indexer.sources import Fresh, Payload
from vizdex.indexer.storage import DataStore
from vizdex.indexer.thumbnails import make_thumbnail


class ThumbnailSink:
    def __init__(self, store: DataStore, *, longest: int, quality: int, workers: int) -> None:
        self._store = store
        self._longest = longest
        self._quality = quality
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vizdex-thumbs")

    def write(
        self, payloads: Sequence[Payload], previews: Sequence[Image.Image | None]
    ) -> set[str]:
        """Store the thumbnails of the batch's fresh images.

        Encoding, writing and renaming run in the pool (at GPU rates even creating the files, a
        millisecond each on some disks, is too much for one thread). Returns the names that got
        none (no pixels were at hand), so their rows leave them out.
        """
        ready: list[tuple[str, bytes]] = []
        encoding: list[tuple[str, Future[bytes]]] = []
        missing: set[str] = set()
        seen: set[str] = set()
        for payload, preview in zip(payloads, previews, strict=True):
            if not isinstance(payload, Fresh) or payload.thumbnail in seen:
                continue
            seen.add(payload.thumbnail)
            if payload.thumbnail_data is not None:
                ready.append((payload.thumbnail, payload.thumbnail_data))
            elif self._store.has(payload.thumbnail):
                continue
            elif preview is not None:
                job = self._pool.submit(
                    make_thumbnail, preview, longest=self._longest, quality=self._quality
                )
                encoding.append((payload.thumbnail, job))
            else:
                missing.add(payload.thumbnail)
        wait([job for _, job in encoding])
        ready.extend((name, job.result()) for name, job in encoding)
        self._store.put_files(ready, self._pool)
        return missing

    def close(self) -> None:
        self._pool.shutdown()
