"""Writes each batch's thumbnails just before the batch's rows are committed.

The loader makes WebP bytes itself when it decoded the image on the CPU; for JPEGs decoded on
the GPU it never sees the pixels, and the stream hands over a small preview instead, which is
encoded here in a thread pool (WebP costs milliseconds per image, too much for one thread at
GPU ingest rates). Each file is fsynced as it is written; each folder once per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

from PIL import Image

from indexer.sources import Fresh, Payload
from indexer.storage import DataStore
from indexer.thumbnails import make_thumbnail


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
        jobs: list[Future[tuple[Path, Path] | None]] = []
        missing: set[str] = set()
        seen: set[str] = set()
        for payload, preview in zip(payloads, previews, strict=True):
            if not isinstance(payload, Fresh) or payload.thumbnail in seen:
                continue
            seen.add(payload.thumbnail)
            if payload.thumbnail_data is None and preview is None:
                if not self._store.has(payload.thumbnail):
                    missing.add(payload.thumbnail)
                continue
            jobs.append(self._pool.submit(self._stage, payload, preview))
        wait(jobs)  # all of them, so a failure leaves no temporary behind
        staged = [entry for job in jobs if not job.exception() and (entry := job.result())]
        failed = next((job.exception() for job in jobs if job.exception()), None)
        if failed is not None:
            self._store.discard(staged)
            raise failed
        self._store.commit(staged, self._pool)
        return missing

    def _stage(self, payload: Fresh, preview: Image.Image | None) -> tuple[Path, Path] | None:
        if self._store.has(payload.thumbnail):
            return None
        data = payload.thumbnail_data
        if data is None:
            assert preview is not None
            data = make_thumbnail(preview, longest=self._longest, quality=self._quality)
        return self._store.stage(payload.thumbnail, data)

    def close(self) -> None:
        self._pool.shutdown()
