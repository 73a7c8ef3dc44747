"""Ingestion jobs: who is running, who died, and counters written while a job runs.

Every unfinished job is backed by an exclusive ``flock`` on ``locks/job-<id>.lock`` held by the
process running it (or queueing it). The kernel drops that lock when the process dies, SIGKILL
included, so "unfinished in the catalog and unlocked" means interrupted: the next job start marks
it failed. Creating, finishing and reaping jobs all happen under one more lock (``jobs.lock``), so
a job is never reaped between its last write and the release of its lock.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from vizdex.core.errors import ConflictError
from vizdex.search import Catalog, JobFailure, JobRecord, JobState, move_aside

log = logging.getLogger(__name__)


class JobFinishedError(ConflictError):
    """The job asked to stop already ended (done or failed): nothing is left to cancel."""

    code = "job_finished"


INTERRUPTED = (
    "interrupted: the process running this job stopped before it finished; "
    "running the same ingestion again resumes it"
)
UPLOAD_INTERRUPTED = (
    "interrupted: the server stopped before this upload finished; the images it reports as done "
    "are indexed, and uploading all of them again adds the rest (the others are duplicates)"
)


DUPLICATES_INTERRUPTED = (
    "interrupted: the process running this duplicate scan stopped before it finished; "
    "ask for the duplicates again"
)


def interrupted_reason(kind: str) -> str:
    """Why a job whose process died was failed, and what brings its images (or result) in."""
    if kind == "duplicates":
        return DUPLICATES_INTERRUPTED
    return UPLOAD_INTERRUPTED if kind == "upload" else INTERRUPTED


class JobLease:
    """Proof that this process runs (or has queued) a job; release it when the job is finished."""

    def __init__(self, locks: JobLocks, job_id: int, descriptor: int) -> None:
        self._locks = locks
        self.job_id = job_id
        self._descriptor: int | None = descriptor
        self._guard = threading.Lock()

    @property
    def released(self) -> bool:
        return self._descriptor is None

    def release(self) -> None:
        """Remove the lock file and drop the lock (the caller holds the registry lock)."""
        with self._guard:
            if self._descriptor is None:
                return
            self._locks.path_for(self.job_id).unlink(missing_ok=True)
            os.close(self._descriptor)  # closing drops the flock
            self._descriptor = None


# What opening a lock file meets when something else stands in its place.
_NOT_A_FILE = frozenset({errno.EISDIR, errno.ELOOP, errno.ENXIO, errno.ENOENT})


class JobLocks:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path_for(self, job_id: int) -> Path:
        return self.directory / f"job-{job_id}.lock"

    def _open(self, path: Path) -> int:
        """A descriptor of the lock file ``path``, made if missing. Lock files hold nothing: a
        folder, a broken link or a socket in the way (of them or of their folder) is moved
        aside, like a damaged index file, rather than failing every job (or the start)."""
        if os.path.lexists(self.directory) and not self.directory.is_dir():
            move_aside(self.directory, "not a folder")
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            if error.errno not in _NOT_A_FILE:
                raise
        move_aside(path, "not a lock file")
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    @contextmanager
    def registry(self) -> Iterator[None]:
        """Serialises job creation, completion and reaping across threads and processes."""
        descriptor = self._open(self.directory / "jobs.lock")
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    def hold(self, job_id: int) -> JobLease:
        descriptor = self._open(self.path_for(job_id))
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(descriptor)
            raise
        return JobLease(self, job_id, descriptor)

    def is_held(self, job_id: int) -> bool:
        """Whether a live process holds the job's lock (this one included, via another lease)."""
        try:
            descriptor = os.open(self.path_for(job_id), os.O_RDWR)
        except FileNotFoundError:
            return False
        except OSError as error:  # no lock file (a folder, a broken link): nobody holds it
            if error.errno in (*_NOT_A_FILE, errno.ENOTDIR):
                return False
            raise
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(descriptor)
        return False


def _unfinished(catalog: Catalog, collection_id: int | None) -> list[JobRecord]:
    jobs: list[JobRecord] = []
    for state in (JobState.PENDING, JobState.RUNNING):
        jobs.extend(catalog.list_jobs(collection_id=collection_id, state=state, limit=100_000))
    return jobs


def reap_interrupted(
    catalog: Catalog,
    locks: JobLocks,
    collection_id: int | None = None,
    *,
    job_ids: Sequence[int] | None = None,
) -> list[int]:
    """Mark unfinished jobs whose process is gone as failed; returns their ids.

    ``job_ids``: look at those jobs only (a reader about to show them), else at every unfinished
    job (of ``collection_id`` when given).
    """
    reaped: list[int] = []
    with locks.registry():
        if job_ids is None:
            candidates = _unfinished(catalog, collection_id)
        else:
            candidates = [catalog.get_job(job_id) for job_id in job_ids]
        # Queued jobs live by their chunks' leases (indexer.queue), not by a process's lock.
        queued = catalog.queued_job_ids([job.id for job in candidates])
        for job in candidates:
            if job.state not in (JobState.PENDING, JobState.RUNNING) or job.id in queued:
                continue
            if not locks.is_held(job.id):
                catalog.set_job_state(job.id, JobState.FAILED, error=interrupted_reason(job.kind))
                locks.path_for(job.id).unlink(missing_ok=True)
                reaped.append(job.id)
    if reaped:
        log.info("marked interrupted jobs as failed: %s", reaped)
    return reaped


def open_job(
    catalog: Catalog, locks: JobLocks, collection_id: int, *, kind: str, source: str
) -> tuple[JobRecord, JobLease, list[int]]:
    """Create a job and its lease; returns (job, lease, ids of interrupted jobs just reaped).

    The same ingestion (kind ``ingest``, same source) running elsewhere is a conflict: two of them
    would only decode everything twice. Uploads never conflict.
    """
    reaped = reap_interrupted(catalog, locks, collection_id)
    with locks.registry():
        if kind == "ingest":
            for job in _unfinished(catalog, collection_id):
                if job.kind == kind and job.source == source and locks.is_held(job.id):
                    raise ConflictError(
                        f"the same ingestion is already running as job {job.id}; "
                        "wait for it to finish (vizdex jobs shows its progress)",
                        job_id=job.id,
                    )
        job = catalog.create_job(collection_id, kind=kind, source=source)
        lease = locks.hold(job.id)
    return job, lease, reaped


def close_job(
    catalog: Catalog,
    locks: JobLocks,
    lease: JobLease,
    state: JobState,
    *,
    error: str | None = None,
) -> JobRecord:
    """Set the final state and release the lease as one step for any reaper."""
    with locks.registry():
        try:
            return catalog.set_job_state(lease.job_id, state, error=error)
        finally:
            lease.release()


class JobTracker:
    """Adds a job's counters up in memory and writes them at most every ``interval_s``.

    One small transaction per flush instead of one per image keeps the catalog's write lock free
    for the batches themselves; the job as read by others lags by at most ``interval_s``.
    """

    def __init__(
        self,
        catalog: Catalog,
        job_id: int,
        *,
        interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        cancel: threading.Event | None = None,
    ) -> None:
        self._catalog = catalog
        self._job_id = job_id
        self._cancel = cancel  # set when a write finds the job cancelled (by another process)
        self._interval = interval_s
        self._clock = clock
        self._last = clock()
        self._done = 0
        self._skipped = 0
        self._failures: list[JobFailure] = []
        self._total: int | None = None

    def set_total(self, total: int) -> None:
        self._total = total
        self.flush()

    def add(self, *, done: int = 0, skipped: int = 0, failures: Sequence[JobFailure] = ()) -> None:
        self._done += done
        self._skipped += skipped
        self._failures.extend(failures)
        if self._clock() - self._last >= self._interval:
            self.flush()

    def flush(self) -> None:
        self._last = self._clock()
        if not (self._done or self._skipped or self._failures or self._total is not None):
            return
        self._record(self._total, self._done, self._skipped, self._failures)
        self._done = self._skipped = 0
        self._failures = []
        self._total = None

    def _record(
        self, total: int | None, done: int, skipped: int, failures: Sequence[JobFailure]
    ) -> None:
        record = self._catalog.record_job_progress(
            self._job_id, total=total, done=done, skipped=skipped, failures=failures
        )
        if record.state is JobState.CANCELLED and self._cancel is not None:
            self._cancel.set()
