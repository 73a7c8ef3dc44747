"""Queued ingestion: jobs split into chunks in the catalog, run by workers on any machine.

``enqueue_request`` turns an ingestion into a pending job and its chunks (files listed up front;
uploaded bytes spooled into the data directory, which every worker sees); ``QueueWorker`` claims
chunks one at a time under a lease it renews from a heartbeat thread, runs each through the same
pipeline as an in-process job (``Indexer.run_chunk``), and ends it. A worker that dies stops
renewing; another claims the chunk once the lease has run out and runs it again: everything the
dead worker committed is found in the catalog (same path, size and mtime; or same content) and
skipped, so every file is indexed exactly once.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vizdex.indexer.jobs import JobFinishedError, JobTracker
from vizdex.indexer.sources import IngestRequest, Upload
from vizdex.indexer.storage import DataStore
from vizdex.search import (
    Catalog,
    ClaimedItem,
    CollectionRecord,
    JobFailure,
    JobRecord,
    JobState,
)

if TYPE_CHECKING:
    from vizdex.indexer.report import IngestReport

log = logging.getLogger(__name__)

CHUNK_SIZE = 256  # files (or uploads) per chunk: a few encoder batches, seconds of work
SPOOL = "queue"  # uploads waiting for a worker: <data dir>/queue/<job token>/<position>


def worker_name() -> str:
    """Who holds a lease, as people reading the jobs table would want to see it."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), max(1, size)):
        yield values[start : start + size]


def enqueue_request(
    catalog: Catalog,
    store: DataStore,
    collection: CollectionRecord,
    request: IngestRequest,
    files: Sequence[str],
    *,
    chunk_size: int = CHUNK_SIZE,
) -> JobRecord:
    """The pending job and its chunks; uploads are on disk (fsynced) before the job exists."""
    token = uuid.uuid4().hex
    uploads, urls = request.numbered()
    spooled: list[dict[str, Any]] = []
    for position, upload in uploads:
        name = f"{SPOOL}/{token}/{position}"
        store.write_atomic(store.resolve(name), upload.data)
        spooled.append(
            {
                "file": name,
                "name": upload.name,
                "metadata": dict(upload.metadata),
                "position": position,
            }
        )
    chunks: list[dict[str, Any]] = []
    chunks.extend({"uploads": list(part)} for part in _chunks(spooled, chunk_size))
    chunks.extend(
        {"urls": [[position, url] for position, url in part]} for part in _chunks(urls, chunk_size)
    )
    chunks.extend({"paths": list(part)} for part in _chunks(list(files), chunk_size))
    if not chunks:
        chunks.append({"paths": []})  # an empty folder is still a job that finishes
    return catalog.enqueue_job(
        collection.id,
        kind=request.kind,
        source=request.describe(),
        total=len(spooled) + len(urls) + len(files),
        chunks=chunks,
    )


def request_for(claimed: ClaimedItem, store: DataStore) -> IngestRequest | None:
    """The chunk as an ingestion request (uploads read back from the spool); None for the empty
    chunk of an empty folder, which only finishes its job."""
    payload = claimed.payload
    uploads = [
        (
            int(entry["position"]),
            Upload(
                data=store.resolve(str(entry["file"])).read_bytes(),
                name=entry.get("name"),
                metadata=dict(entry.get("metadata") or {}),
            ),
        )
        for entry in payload.get("uploads", [])
    ]
    urls = [(int(position), str(url)) for position, url in payload.get("urls", [])]
    paths = tuple(str(path) for path in payload.get("paths", []))
    if not (uploads or urls or paths):
        return None
    return IngestRequest(
        paths=paths,
        uploads=tuple(upload for _, upload in uploads),
        urls=tuple(url for _, url in urls),
        positions=tuple(position for position, _ in uploads)
        + tuple(position for position, _ in urls),
    )


def drop_spool(store: DataStore, payload: Mapping[str, Any]) -> None:
    """Removes a chunk's spooled uploads once it is over or dropped (its job keeps the outcome)."""
    uploads = payload.get("uploads", [])
    folders = {str(entry["file"]).rsplit("/", 1)[0] for entry in uploads}
    for entry in uploads:
        store.resolve(str(entry["file"])).unlink(missing_ok=True)
    for folder in folders:
        path = store.resolve(folder)
        if path.is_dir() and not any(path.iterdir()):
            shutil.rmtree(path, ignore_errors=True)


def cancel_job(catalog: Catalog, store: DataStore, job_id: int) -> JobRecord:
    """Cancels a job wherever it runs (``Catalog.cancel_job``); the uploads its waiting chunks
    had spooled go at once (a running chunk's go when its worker stops on it). A job that already
    ended is a ``JobFinishedError``; cancelling a cancelled job again is harmless."""
    job, dropped = catalog.cancel_job(job_id)
    if job.state in (JobState.DONE, JobState.FAILED):
        raise JobFinishedError(f"job {job_id} already ended ({job.state.value}): nothing to cancel")
    for payload in dropped:
        drop_spool(store, payload)
    return job


class ChunkTracker(JobTracker):
    """A ``JobTracker`` whose counts go to the chunk and its job together.

    When the chunk is no longer this worker's (it stalled past its lease and another took over),
    it sets ``cancel``: the counts from here on belong to the new owner.
    """

    def __init__(
        self,
        catalog: Catalog,
        claimed: ClaimedItem,
        owner: str,
        cancel: threading.Event,
        *,
        interval_s: float = 0.5,
    ) -> None:
        super().__init__(catalog, claimed.job_id, interval_s=interval_s)
        self._item = claimed.id
        self._owner = owner
        self._lost = cancel

    def set_total(self, total: int) -> None:
        """The job's total was set when it was queued; a chunk knows only its own share."""

    def _record(
        self, total: int | None, done: int, skipped: int, failures: Sequence[JobFailure]
    ) -> None:
        if not self._catalog.record_item_progress(
            self._item, self._owner, done=done, skipped=skipped, failures=failures
        ):
            self._lost.set()


@dataclass
class WorkerOptions:
    lease_s: float = 30.0  # a dead worker's chunk waits this long before another takes it
    poll_s: float = 1.0  # how often an idle worker looks for work

    @property
    def heartbeat_s(self) -> float:
        return max(0.05, self.lease_s / 3)


class QueueWorker:
    """Claims chunks and runs them with ``run_chunk`` until ``stop`` is set."""

    def __init__(
        self,
        catalog: Catalog,
        run_chunk: Callable[[ClaimedItem, str, threading.Event], IngestReport],
        store: DataStore,
        options: WorkerOptions | None = None,
        *,
        name: str | None = None,
    ) -> None:
        self._catalog = catalog
        self._run_chunk = run_chunk
        self._store = store
        self.options = options or WorkerOptions()
        self.name = name or worker_name()
        self.chunks_run = 0

    def run(self, stop: threading.Event, *, until_idle: bool = False) -> int:
        """Works until ``stop`` (or, with ``until_idle``, until no chunk is left to claim)."""
        while not stop.is_set():
            try:
                claimed = self._catalog.claim_work(self.name, lease_s=self.options.lease_s)
            except Exception:  # the database briefly unreachable: try again, never die of it
                log.exception("worker %s could not claim work", self.name)
                claimed = None
            if claimed is None:
                if until_idle:
                    break
                stop.wait(self.options.poll_s)
                continue
            if claimed.cancelled:  # its job was cancelled while nobody held it
                drop_spool(self._store, claimed.payload)
                continue
            self.work_on(claimed, stop)
        return self.chunks_run

    def work_on(self, claimed: ClaimedItem, stop: threading.Event) -> None:
        if claimed.resumed:
            log.info(
                "worker %s resumes chunk %d of job %d (attempt %d): its last owner stopped",
                self.name,
                claimed.position,
                claimed.job_id,
                claimed.attempts,
            )
        cancel = threading.Event()
        ended = threading.Event()
        heart = threading.Thread(
            target=self._heartbeat, args=(claimed, cancel, ended, stop), daemon=True
        )
        heart.start()
        failed, error = False, None
        try:
            self._run_chunk(claimed, self.name, cancel)
        except Exception as failure:  # the chunk fails; the worker goes on with the next one
            log.exception("chunk %d of job %d failed", claimed.position, claimed.job_id)
            failed = True
            error = getattr(failure, "message", None) or f"{type(failure).__name__}: {failure}"
        finally:
            ended.set()
            heart.join()
        self.chunks_run += 1
        if stop.is_set() and cancel.is_set() and not failed:
            # Shutting down mid-chunk: give it back now rather than make others wait a lease.
            self._catalog.release_work(claimed.id, self.name)
            return
        job = self._catalog.finish_work(claimed.id, self.name, failed=failed, error=error)
        if job is not None:
            drop_spool(self._store, claimed.payload)
            if job.state.finished:
                log.info("job %d is %s", job.id, job.state.value)

    def _heartbeat(
        self,
        claimed: ClaimedItem,
        cancel: threading.Event,
        ended: threading.Event,
        stop: threading.Event,
    ) -> None:
        """Renews the lease every ``heartbeat_s``; sets ``cancel`` when the job was cancelled,
        the chunk was taken over, or the worker is stopping."""
        next_beat = time.monotonic() + self.options.heartbeat_s
        while not ended.wait(0.1):
            if stop.is_set():
                cancel.set()
            if time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + self.options.heartbeat_s
            try:
                if not self._catalog.renew_lease(
                    claimed.id, self.name, lease_s=self.options.lease_s
                ):
                    cancel.set()
            except Exception:  # keep beating: the lease is long enough to ride out a blip
                log.exception("worker %s could not renew its lease", self.name)
