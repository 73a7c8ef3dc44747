"""Ingestion jobs: their state, counters and first failures."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from vizdex.search.catalog.rows import job_record
from vizdex.search.catalog.session import CatalogSession, chunks
from vizdex.search.errors import JobNotFoundError
from vizdex.search.models import Job, WorkItem, utcnow
from vizdex.search.records import JobFailure, JobRecord, JobState

FINISHED_STATES = tuple(state.value for state in JobState if state.finished)

# A job keeps its first failures with reasons; the counters stay exact beyond that.
MAX_JOB_FAILURES = 1000


def _locked_job(session: Session, job_id: int) -> Job | None:
    """The job's row, locked until commit: counters are read, added to and written back, and two
    processes doing that at once must not lose one another's counts (PostgreSQL runs writers side
    by side; SQLite's write lock already serialised them)."""
    return session.get(Job, job_id, with_for_update=True, populate_existing=True)


def add_progress(
    row: Job,
    *,
    total: int | None = None,
    done: int = 0,
    skipped: int = 0,
    failures: Sequence[JobFailure] = (),
    chunk: int | None = None,
) -> None:
    """Adds to a locked job row's counters (``done``, ``skipped``, one ``failed`` per failure).

    ``chunk``: the queue chunk the failures come from, kept with each so that a chunk taken over
    from a dead worker can take its share out again (``forget_chunk_failures``).
    """
    if total is not None:
        row.total = max(0, total)
    row.done += max(0, done)
    row.skipped += max(0, skipped)
    row.failed += len(failures)
    room = MAX_JOB_FAILURES - len(row.failures)
    if failures and room > 0:
        tag = {} if chunk is None else {"chunk": chunk}
        row.failures = [
            *row.failures,
            *(
                {"item": f.item, "code": f.code, "message": f.message, **tag}
                for f in failures[:room]
            ),
        ]


def forget_chunk_failures(row: Job, chunk: int) -> None:
    """Takes one chunk's failures out of a locked job row's list (not its counters)."""
    if any(failure.get("chunk") == chunk for failure in row.failures):
        row.failures = [failure for failure in row.failures if failure.get("chunk") != chunk]


class JobsPart(CatalogSession):
    def create_job(
        self, collection_id: int, *, kind: str, source: str | None = None, total: int = 0
    ) -> JobRecord:
        row = Job(
            collection_id=collection_id,
            kind=kind,
            source=source,
            state=JobState.PENDING.value,
            total=max(0, total),
            done=0,
            skipped=0,
            failed=0,
            failures=[],
        )
        with self._write() as session:
            self._lock(session, collection_id)
            session.add(row)
            session.flush()
            return job_record(row)

    def get_job(self, job_id: int) -> JobRecord:
        with self._read() as session:
            row = session.get(Job, job_id)
            if row is None:
                raise JobNotFoundError(f"job {job_id} does not exist")
            return job_record(row)

    def list_jobs(
        self,
        *,
        collection_id: int | None = None,
        state: JobState | None = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        query = select(Job).order_by(Job.id.desc()).limit(max(1, limit))
        if collection_id is not None:
            query = query.where(Job.collection_id == collection_id)
        if state is not None:
            query = query.where(Job.state == JobState(state).value)
        with self._read() as session:
            return [job_record(row) for row in session.scalars(query)]

    def record_job_progress(
        self,
        job_id: int,
        *,
        total: int | None = None,
        done: int = 0,
        skipped: int = 0,
        failures: Sequence[JobFailure] = (),
    ) -> JobRecord:
        """Adds to a job's counters (``done``, ``skipped``, one ``failed`` per failure)."""
        with self._write() as session:
            row = _locked_job(session, job_id)
            if row is None:
                raise JobNotFoundError(f"job {job_id} does not exist")
            add_progress(row, total=total, done=done, skipped=skipped, failures=failures)
            row.updated_at = utcnow()
            session.flush()
            return job_record(row)

    def start_job(self, job_id: int) -> JobRecord:
        """A pending job becomes running; any other state (cancelled while it waited) stays."""
        with self._write() as session:
            row = _locked_job(session, job_id)
            if row is None:
                raise JobNotFoundError(f"job {job_id} does not exist")
            if row.state == JobState.PENDING.value:
                row.state = JobState.RUNNING.value
                row.updated_at = utcnow()
                session.flush()
            return job_record(row)

    def set_job_state(self, job_id: int, state: JobState, *, error: str | None = None) -> JobRecord:
        state = JobState(state)
        with self._write() as session:
            row = _locked_job(session, job_id)
            if row is None:
                raise JobNotFoundError(f"job {job_id} does not exist")
            row.state = state.value
            if error is not None:
                row.error = error
            now = utcnow()
            row.updated_at = now
            row.finished_at = now if state.finished else None
            session.flush()
            return job_record(row)

    def prune_jobs(self, finished_before: datetime) -> int:
        """Deletes finished jobs (done, failed, cancelled) that ended before ``finished_before``,
        with their work-queue chunks; pending and running jobs stay whatever their age. Returns
        how many jobs went. A job that ended without ``finished_at`` (written by an older release)
        counts from its last update."""
        with self._write() as session:
            ended = func.coalesce(Job.finished_at, Job.updated_at)
            old = list(
                session.scalars(
                    select(Job.id).where(Job.state.in_(FINISHED_STATES), ended < finished_before)
                )
            )
            for chunk in chunks(old):
                # The chunks first: they reference their job.
                session.execute(delete(WorkItem).where(WorkItem.job_id.in_(chunk)))
                session.execute(delete(Job).where(Job.id.in_(chunk)))
            return len(old)
