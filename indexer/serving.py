"""The indexer's side of a running server, beside the ingestion runs themselves.

A server opens one ``SearchService``; ``open_indexer`` gives it an ``Indexer`` on the same catalog
and indexes. The routes then ask two small services, never the catalog or the data directory:

- ``ImageFiles``: an image's original file and its thumbnail. Images that have no thumbnail yet
  (added without the indexer, or stored before thumbnails existed) get one on first request:
  decoded, written to the data store and recorded in the catalog, the same as ingestion would.
- ``JobsService``: a job as the API shows it (with its collection's name), and how many wait.

Both wrap open objects and are cheap to make per request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vizdex.core.errors import UnavailableError, VizdexError
from vizdex.encoders.base import Encoder
from vizdex.imaging import decode_file
from vizdex.imaging.settings import ImageInputSettings
from vizdex.indexer.duplicate_jobs import DuplicateJobs
from vizdex.indexer.job_view import JobOut, job_out
from vizdex.indexer.pipeline import Indexer
from vizdex.indexer.queue import WorkerOptions, cancel_job
from vizdex.indexer.settings import IndexerSettings
from vizdex.indexer.storage import DataStore
from vizdex.search import (
    CollectionNotFoundError,
    ImageNotFoundError,
    ImageRecord,
    JobState,
    SearchService,
)

REAP_INTERVAL_S = 30.0  # how stale a dead process's job may look in lists (one job: never)


def open_indexer(
    search: SearchService,
    models: Mapping[str, Encoder],
    settings: IndexerSettings,
    images: ImageInputSettings,
) -> Indexer:
    """An indexer writing to ``search``'s catalog and indexes (so searches see what it adds),
    failing the jobs of processes that died, now and every ``REAP_INTERVAL_S``.

    On PostgreSQL (the distributed profile) background jobs go to the catalog's work queue, and
    this server works the queue too unless ``settings.serve_worker`` is off.
    """
    queue = search.catalog.engine.dialect.name == "postgresql"
    indexer = Indexer(search.catalog, search.writer_indexes, models, settings, images, queue=queue)
    indexer.start_reaper(REAP_INTERVAL_S)
    if queue and settings.serve_worker:
        indexer.start_queue_worker(WorkerOptions(lease_s=settings.worker_lease_s))
    return indexer


def _missing(image_id: int, what: str) -> ImageNotFoundError:
    return ImageNotFoundError(
        f"the {what} of image {image_id} is not available on this server",
        code="file_missing",
        image_id=image_id,
    )


class FileNotSharedError(UnavailableError):
    """The catalog records a file inside the data directory that this server cannot see: every
    server on one catalog must see the same data directory (a shared filesystem)."""

    code = "file_not_shared"


def _visible(path: Path | None) -> bool:
    try:
        return path is not None and path.is_file()
    except OSError:  # e.g. no permission, a stale network mount: not readable here either
        return False


@dataclass(frozen=True)
class StoredFile:
    """An image's original on disk, with the name and format to serve it under."""

    path: Path
    filename: str
    format: str  # as the catalog records it (JPEG, PNG, ...)


class ImageFiles:
    def __init__(
        self,
        search: SearchService,
        store: DataStore,
        settings: IndexerSettings,
        images: ImageInputSettings,
    ) -> None:
        self._search = search
        self._store = store
        self._settings = settings
        self._images = images

    def _image(self, collection: str, image_id: int) -> ImageRecord:
        catalog = self._search.catalog
        return catalog.get_image(catalog.get_collection(collection).id, image_id)

    def _unseen(self, image_id: int, what: str, path: Path | None) -> VizdexError:
        """A file the catalog records but this server cannot read. One inside the data
        directory (an upload's original, a thumbnail) was written there by whichever server or
        worker took the image: on a shared catalog (PostgreSQL), not seeing it means this
        server's data directory is not theirs. One server alone just lost the file."""
        shared = self._search.catalog.engine.dialect.name == "postgresql"
        if not shared or path is None or not path.is_relative_to(self._store.root):
            return _missing(image_id, what)  # also a folder image moved or deleted at its source
        return FileNotSharedError(
            f"the {what} of image {image_id} is recorded in the catalog but {path} cannot be "
            "read on this server: every server and worker on one catalog must see the same "
            "data directory (VIZDEX_DATA_DIR on a shared filesystem, mounted at the same path; "
            "see the README's distributed profile).",
            image_id=image_id,
        )

    def original(self, collection: str, image_id: int) -> StoredFile:
        """The image's own file (a folder image's path, or the original kept for an upload)."""
        image = self._image(collection, image_id)
        path = self._store.image_file(image)
        if path is None or not _visible(path):
            raise self._unseen(image_id, "file", path)
        return StoredFile(
            path=path,
            filename=image.original_name or f"{image_id}{path.suffix or ''}",
            format=image.format,
        )

    def thumbnail(self, collection: str, image_id: int) -> Path:
        """The image's WebP thumbnail, made (and recorded) now if it has none yet."""
        image = self._image(collection, image_id)
        store = self._store
        path = store.thumbnail_file(image)
        if _visible(path):
            assert path is not None
            return path
        source = store.image_file(image)
        if source is None or not _visible(source):
            raise self._unseen(image.id, "thumbnail", path or source)
        longest = self._settings.thumbnail_size
        try:
            decoded = decode_file(source, self._images, min_side=longest)
        except VizdexError:
            raise _missing(image.id, "thumbnail") from None
        stored = store.put_thumbnail(
            image.sha256, decoded.image, longest=longest, quality=self._settings.thumbnail_quality
        )
        self._search.catalog.update_image(image.collection_id, image.id, thumbnail_path=stored)
        return store.resolve(stored)


class JobsService:
    def __init__(
        self,
        search: SearchService,
        indexer: Indexer | None = None,
        duplicates: DuplicateJobs | None = None,
    ) -> None:
        self._search = search
        self._indexer = indexer
        self._duplicates = duplicates

    def cancel(self, job_id: int) -> JobOut:
        """Stops a job, whichever process runs it (see ``cancel_job``): one this server runs
        stops after its current batch, a queued one's waiting chunks at once."""
        indexer = self._indexer
        if indexer is None:
            raise UnavailableError("the service is starting; retry shortly", code="starting")
        cancel_job(self._search.catalog, indexer.store, job_id)
        # Ours: stop now rather than at the job's next progress write.
        if not indexer.cancel(job_id) and self._duplicates is not None:
            self._duplicates.cancel(job_id)
        return self.describe(job_id)

    def describe(self, job_id: int) -> JobOut:
        """The job with its collection's name (None once the collection was deleted). A job
        shown as unfinished has a live process: one whose process died is failed first."""
        catalog = self._search.catalog
        record = catalog.get_job(job_id)
        indexer = self._indexer
        if not record.state.finished and indexer and indexer.reap_interrupted([job_id]):
            record = catalog.get_job(job_id)
        seq: int | None = None
        try:
            found = catalog.get_collection_by_id(record.collection_id)
            collection: str | None = found.name
            if record.state is JobState.DONE:
                seq = catalog.collection_seq(found.id)  # read after the job's last commit
        except CollectionNotFoundError:
            collection = None
        return job_out(record, collection, seq)

    def count_pending(self, *, up_to: int) -> int:
        """How many jobs wait for their turn, counting no further than ``up_to``."""
        return len(self._search.catalog.list_jobs(state=JobState.PENDING, limit=up_to))
