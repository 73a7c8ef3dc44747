"""Duplicate scans of large collections as background jobs, their results kept on disk.

A scan of a few thousand images answers within its request; a large collection's runs as a job
(kind ``duplicates``) through the same machinery as uploads: a catalog row with counters
(``total`` images to scan, ``done`` scanned), a lock file held while it runs (a process that
dies leaves it to the reaper), ``GET /v1/jobs/{id}`` for progress. The finished scan (ids and
scores only) is written whole to ``duplicates/job-<id>.json`` in the data directory; the latest
``KEEP_RESULTS`` are kept, and pages of groups are read from there.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vizdex.core.errors import ConflictError, VizdexError
from vizdex.indexer.jobs import JobLease, JobLocks, JobTracker, close_job, open_job
from vizdex.indexer.storage import DataStore
from vizdex.search import (
    DuplicateOptions,
    DuplicateScan,
    JobNotFoundError,
    JobRecord,
    JobState,
    SearchService,
)

log = logging.getLogger(__name__)

KIND = "duplicates"
KEEP_RESULTS = 20
RESULTS_DIR = "duplicates"


class JobNotFinishedError(ConflictError):
    """The duplicate scan asked for is still waiting or running: follow its job."""

    code = "job_not_finished"


class JobFailedError(ConflictError):
    """The duplicate scan asked for failed or was cancelled: it has no result."""

    code = "job_failed"


def describe(options: DuplicateOptions) -> str:
    """The job's ``source``: what was asked for, readable in job lists."""
    parts = [f"threshold {options.threshold:g}"]
    if options.model:
        parts.append(f"model {options.model}")
    if options.filters is not None and options.filters.active:
        parts.append("filtered")
    return "duplicates, " + ", ".join(parts)


class DuplicateJobs:
    """Runs duplicate scans one after another on a background thread; hands out their results."""

    def __init__(self, search: SearchService, store: DataStore, *, flush_s: float = 0.5) -> None:
        self._search = search
        self._store = store
        self._locks = JobLocks(store.locks_dir)
        self._flush_s = flush_s
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="vizdex-duplicates")
        self._cancels: dict[int, threading.Event] = {}
        self._guard = threading.Lock()

    def result_path(self, job_id: int) -> Path:
        return self._store.root / RESULTS_DIR / f"job-{job_id}.json"

    def submit(self, collection: str, options: DuplicateOptions) -> JobRecord:
        """Create the job (``pending``) and queue the scan; returns at once."""
        catalog = self._search.catalog
        record = catalog.get_collection(collection)
        self._search.duplicates.size(collection, options)  # a bad model is refused now
        self._store.keep_reserve()  # room to record the job's end should the disk fill
        job, lease, _ = open_job(
            catalog, self._locks, record.id, kind=KIND, source=describe(options)
        )
        cancel = threading.Event()
        with self._guard:
            self._cancels[job.id] = cancel
        try:
            self._executor.submit(self._run, job, lease, collection, options, cancel)
        except BaseException:  # shut down meanwhile: the job ends now rather than never
            self._forget(job.id)
            close_job(catalog, self._locks, lease, JobState.CANCELLED)
            raise
        return job

    def result(self, collection: str, job_id: int) -> DuplicateScan:
        """The finished scan of job ``job_id``, which must be this collection's duplicate scan."""
        catalog = self._search.catalog
        job = catalog.get_job(job_id)
        record = catalog.get_collection(collection)
        if job.kind != KIND or job.collection_id != record.id:
            raise JobNotFoundError(
                f"job {job_id} is not a duplicate scan of collection {collection!r}",
                job_id=job_id,
            )
        if job.state in (JobState.PENDING, JobState.RUNNING):
            done = f"{job.done} of {job.total} images scanned" if job.total else "waiting"
            raise JobNotFinishedError(
                f"duplicate scan {job_id} is {job.state.value} ({done}); follow /v1/jobs/{job_id}",
                job_id=job_id,
            )
        if job.state is not JobState.DONE:
            raise JobFailedError(
                f"duplicate scan {job_id} {job.state.value}"
                + (f": {job.error}" if job.error else "")
                + "; ask for the duplicates again",
                job_id=job_id,
            )
        try:
            data = json.loads(self.result_path(job_id).read_bytes())
        except FileNotFoundError:
            raise JobNotFoundError(
                f"the result of duplicate scan {job_id} is no longer kept (the latest "
                f"{KEEP_RESULTS} are); ask for the duplicates again",
                job_id=job_id,
            ) from None
        return DuplicateScan.from_json(data)

    def cancel(self, job_id: int) -> bool:
        """Stop a scan of this process at its next batch; False if it is not ours."""
        with self._guard:
            event = self._cancels.get(job_id)
        if event is not None:
            event.set()
        return event is not None

    def close(self) -> None:
        """Cancel queued and running scans and wait for them to stop."""
        with self._guard:
            events = list(self._cancels.values())
        for event in events:
            event.set()
        self._executor.shutdown(wait=True, cancel_futures=False)

    # -- the work ------------------------------------------------------------------------------

    def _forget(self, job_id: int) -> None:
        with self._guard:
            self._cancels.pop(job_id, None)

    def _run(
        self,
        job: JobRecord,
        lease: JobLease,
        collection: str,
        options: DuplicateOptions,
        cancel: threading.Event,
    ) -> None:
        catalog = self._search.catalog
        tracker = JobTracker(catalog, job.id, interval_s=self._flush_s, cancel=cancel)
        state, error = JobState.FAILED, None
        reported = [0]

        def progress(done: int, total: int) -> None:
            if done == 0:
                tracker.set_total(total)
            tracker.add(done=done - reported[0])
            reported[0] = done

        try:  # from here on, whatever happens, the job is finished before this returns
            if catalog.start_job(job.id).state is JobState.CANCELLED:
                cancel.set()  # cancelled while it waited for its turn
            if not cancel.is_set():
                scan = self._search.duplicates.scan(
                    collection, options, progress=progress, cancelled=cancel.is_set
                )
                if not cancel.is_set():
                    self._keep(job.id, scan)
            state = JobState.CANCELLED if cancel.is_set() else JobState.DONE
        except VizdexError as failure:
            error = failure.message
        except Exception as failure:  # a bug: logged with its traceback, the job says what
            log.exception("duplicate scan %d failed", job.id)
            error = f"{type(failure).__name__}: {failure}"
        finally:
            try:
                tracker.flush()
                close_job(catalog, self._locks, lease, state, error=error)
            except JobNotFoundError:  # deleted with its collection meanwhile: nothing to record
                log.info("duplicate scan %d ended after its collection was deleted", job.id)
            except Exception:
                log.exception("could not record the end of job %d", job.id)
            finally:
                lease.release()
                self._forget(job.id)

    def _keep(self, job_id: int, scan: DuplicateScan) -> None:
        data = json.dumps(scan.to_json()).encode()
        self._store.write_atomic(self.result_path(job_id), data)
        kept = sorted(
            self.result_path(job_id).parent.glob("job-*.json"),
            key=lambda path: int(path.stem.removeprefix("job-")),
        )
        for old in kept[:-KEEP_RESULTS]:
            old.unlink(missing_ok=True)
