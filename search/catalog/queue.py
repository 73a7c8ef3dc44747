"""The work queue: jobs split into chunks that any number of workers claim (ingestion chunks of
files or uploads; a model back-fill is one chunk, its work list being the catalog).

Locks are always taken chunk first, then its job (claim, progress, finish, cancel), so that no two
of these can wait on each other.

A worker claims one chunk with ``SELECT … FOR UPDATE SKIP LOCKED`` (PostgreSQL: workers on many
machines never wait on one another's claim and never get the same chunk; SQLite's write lock does
the same on one machine) and holds it under a lease that it renews while it works. A worker that
dies stops renewing; once the lease has run out the chunk can be claimed again, and the new owner
resumes it. Lease times are the database server's clock, never a worker's, so workers on machines
whose clocks disagree still agree on when a lease ran out.

A worker whose lease was taken over (it stalled longer than the lease) learns so at its next
heartbeat or finish, which match on the owner, and stops without writing the chunk's end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from vizdex.search.catalog.jobs import add_progress, forget_chunk_failures
from vizdex.search.catalog.rows import job_record
from vizdex.search.catalog.session import CatalogSession
from vizdex.search.errors import JobNotFoundError
from vizdex.search.models import Job, WorkItem, utcnow
from vizdex.search.records import JobFailure, JobRecord, JobState

# A chunk taken over this many times (its workers keep dying on it) fails instead.
MAX_ATTEMPTS = 3


class ItemState:
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    FINISHED = (DONE, FAILED, CANCELLED)


@dataclass(frozen=True)
class ClaimedItem:
    """A chunk this worker now owns, until ``lease_until`` unless renewed."""

    id: int
    job_id: int
    collection_id: int
    position: int
    payload: Mapping[str, Any]
    attempts: int
    resumed: bool  # another worker held it before and stopped (died) part-way
    # Its job was cancelled while its worker was gone: nothing to run, but its spooled uploads
    # can go (the chunk is now ``cancelled``, owned by nobody).
    cancelled: bool = False


def _now(session: Session) -> datetime:
    """The database's clock on PostgreSQL (one clock for every machine); ours on SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        value = session.scalar(select(func.now()))
        if isinstance(value, datetime):
            return value
    return utcnow()


def _locked_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None:
        raise JobNotFoundError(f"job {job_id} does not exist")
    return job


def _forget_share(job: Job, row: WorkItem) -> None:
    """Starts the chunk's count over: its last owner's share leaves the job's counters and its
    list of failures (the next owner meets the same files again)."""
    job.done -= row.done
    job.skipped -= row.skipped
    job.failed -= row.failed
    row.done = row.skipped = row.failed = 0
    forget_chunk_failures(job, row.id)


def _claimed(row: WorkItem, *, resumed: bool, cancelled: bool = False) -> ClaimedItem:
    return ClaimedItem(
        id=row.id,
        job_id=row.job_id,
        collection_id=row.collection_id,
        position=row.position,
        payload=dict(row.payload),
        attempts=row.attempts,
        resumed=resumed,
        cancelled=cancelled,
    )


class QueuePart(CatalogSession):
    def enqueue_job(
        self,
        collection_id: int,
        *,
        kind: str,
        source: str,
        total: int,
        chunks: Sequence[Mapping[str, Any]],
        unique: bool = False,
    ) -> JobRecord:
        """A pending job and its chunks, in one transaction: workers see all of it or nothing.

        ``unique``: an unfinished job of this kind and source in the collection is returned
        instead of a second one (decided under the collection's lock: two replicas accepting
        the same back-fill at once make one job)."""
        with self._write() as session:
            self._lock(session, collection_id)
            if unique:
                running = session.scalars(
                    select(Job)
                    .where(
                        Job.collection_id == collection_id,
                        Job.kind == kind,
                        Job.source == source,
                        Job.state.in_((JobState.PENDING.value, JobState.RUNNING.value)),
                    )
                    .order_by(Job.id)
                    .limit(1)
                ).one_or_none()
                if running is not None:
                    return job_record(running)
            job = Job(
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
            session.add(job)
            session.flush()
            session.add_all(
                WorkItem(
                    job_id=job.id,
                    collection_id=collection_id,
                    position=position,
                    payload=dict(payload),
                    state=ItemState.QUEUED,
                    attempts=0,
                    done=0,
                    skipped=0,
                    failed=0,
                )
                for position, payload in enumerate(chunks)
            )
            session.flush()
            return job_record(job)

    def claim_work(self, owner: str, *, lease_s: float) -> ClaimedItem | None:
        """The oldest chunk that is queued or whose lease ran out, now leased to ``owner``."""
        with self._write() as session:
            now = _now(session)
            row = session.scalars(
                select(WorkItem)
                .where(
                    or_(
                        WorkItem.state == ItemState.QUEUED,
                        (WorkItem.state == ItemState.RUNNING) & (WorkItem.lease_until < now),
                    )
                )
                .order_by(WorkItem.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).one_or_none()
            if row is None:
                return None
            resumed = row.state == ItemState.RUNNING
            job = _locked_job(session, row.job_id)
            if resumed:
                _forget_share(job, row)
            if job.state == JobState.CANCELLED.value:
                row.state, row.owner, row.lease_until = ItemState.CANCELLED, None, None
                return _claimed(row, resumed=resumed, cancelled=True)
            if row.attempts >= MAX_ATTEMPTS:
                row.state, row.lease_until = ItemState.FAILED, None
                row.error = (
                    f"the workers running this chunk stopped {row.attempts} times before "
                    "finishing it (killed, or out of memory?); it was given up"
                )
                self._settle_job(session, job, now)
                return None
            row.state = ItemState.RUNNING
            row.owner = owner
            row.lease_until = now + timedelta(seconds=lease_s)
            row.attempts += 1
            row.updated_at = now
            if job.state == JobState.PENDING.value:
                job.state = JobState.RUNNING.value
                job.updated_at = now
            return _claimed(row, resumed=resumed)

    def renew_lease(self, item_id: int, owner: str, *, lease_s: float) -> bool:
        """Extends the lease; False if the chunk is no longer ours or its job was cancelled."""
        with self._write() as session:
            now = _now(session)
            result = session.execute(
                update(WorkItem)
                .where(
                    WorkItem.id == item_id,
                    WorkItem.owner == owner,
                    WorkItem.state == ItemState.RUNNING,
                )
                .values(lease_until=now + timedelta(seconds=lease_s), updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if not getattr(result, "rowcount", 0):
                return False
            state = session.scalar(
                select(Job.state)
                .join(WorkItem, WorkItem.job_id == Job.id)
                .where(WorkItem.id == item_id)
            )
            return state != JobState.CANCELLED.value

    def record_item_progress(
        self,
        item_id: int,
        owner: str,
        *,
        done: int = 0,
        skipped: int = 0,
        failures: Sequence[JobFailure] = (),
    ) -> bool:
        """Adds to the chunk's and its job's counters in one transaction; False if the chunk is
        not ours any more (its counts then belong to whoever took it over)."""
        with self._write() as session:
            row = session.get(WorkItem, item_id, with_for_update=True, populate_existing=True)
            if row is None or row.owner != owner or row.state != ItemState.RUNNING:
                return False
            row.done += max(0, done)
            row.skipped += max(0, skipped)
            row.failed += len(failures)
            job = _locked_job(session, row.job_id)
            add_progress(job, done=done, skipped=skipped, failures=failures, chunk=row.id)
            job.updated_at = utcnow()
        return True

    def finish_work(
        self, item_id: int, owner: str, *, failed: bool = False, error: str | None = None
    ) -> JobRecord | None:
        """Ends the chunk; the job ends with its last chunk. None if the chunk is not ours."""
        with self._write() as session:
            now = _now(session)
            row = session.get(WorkItem, item_id, with_for_update=True, populate_existing=True)
            if row is None or row.owner != owner or row.state != ItemState.RUNNING:
                return None
            job = _locked_job(session, row.job_id)
            row.state = ItemState.FAILED if failed else ItemState.DONE
            row.error = error
            row.lease_until = None
            row.updated_at = now
            session.flush()
            self._settle_job(session, job, now)
            return job_record(job)

    def release_work(self, item_id: int, owner: str) -> None:
        """Gives a chunk back (a worker shutting down): queued again for anyone, at once.

        Its share leaves the job's counters, as on a take-over: the next owner counts the whole
        chunk again (what was committed as skipped), so the job's counts stay exact.
        """
        with self._write() as session:
            row = session.get(WorkItem, item_id, with_for_update=True, populate_existing=True)
            if row is None or row.owner != owner or row.state != ItemState.RUNNING:
                return
            job = _locked_job(session, row.job_id)
            _forget_share(job, row)
            row.state, row.owner, row.lease_until = ItemState.QUEUED, None, None

    def cancel_job(self, job_id: int) -> tuple[JobRecord, list[Mapping[str, Any]]]:
        """Marks a job cancelled, whichever process runs it; a finished job is left as it is.

        A queued job's waiting chunks end at once, running ones at their worker's heartbeat; a
        job run inside one process (an embedded server, a shell's ``vizdex ingest``) stops when
        that process next records progress. Returns the job and the payloads of the chunks it
        dropped (their spooled uploads can go).
        """
        with self._write() as session:
            # Lock order everywhere: the job's chunks, then the job.
            items = session.scalars(
                select(WorkItem)
                .where(WorkItem.job_id == job_id)
                .order_by(WorkItem.id)
                .with_for_update()
            ).all()
            job = _locked_job(session, job_id)
            if JobState(job.state).finished:
                return job_record(job), []
            now = _now(session)
            dropped: list[Mapping[str, Any]] = []
            for item in items:
                if item.state == ItemState.QUEUED:
                    item.state, item.updated_at = ItemState.CANCELLED, now
                    dropped.append(dict(item.payload))
            job.state = JobState.CANCELLED.value
            job.updated_at = job.finished_at = now
            session.flush()
            return job_record(job), dropped

    def spool_references(self) -> set[str]:
        """The spooled upload files that chunks still to run (queued or running) name: any
        other file in the spool belongs to a job that ended, was cancelled or was deleted."""
        with self._read() as session:
            payloads = session.scalars(
                select(WorkItem.payload).where(
                    WorkItem.state.in_((ItemState.QUEUED, ItemState.RUNNING))
                )
            )
            return {
                str(entry["file"]) for payload in payloads for entry in payload.get("uploads", [])
            }

    def queued_job_ids(self, job_ids: Sequence[int]) -> set[int]:
        """Those of ``job_ids`` that run through the queue (their lease, not a process, decides
        whether they are alive)."""
        found: set[int] = set()
        with self._read() as session:
            if job_ids:
                found.update(
                    session.scalars(
                        select(WorkItem.job_id).where(WorkItem.job_id.in_(sorted(set(job_ids))))
                    )
                )
        return found

    @staticmethod
    def _settle_job(session: Session, job: Job, now: datetime) -> None:
        """Finishes the job when none of its chunks is left: failed if one of them failed."""
        states = list(session.scalars(select(WorkItem.state).where(WorkItem.job_id == job.id)))
        if any(state not in ItemState.FINISHED for state in states):
            return
        if JobState(job.state).finished:
            return
        failed = ItemState.FAILED in states
        job.state = (JobState.FAILED if failed else JobState.DONE).value
        if failed and job.error is None:
            job.error = session.scalar(
                select(WorkItem.error)
                .where(WorkItem.job_id == job.id, WorkItem.state == ItemState.FAILED)
                .order_by(WorkItem.position)
                .limit(1)
            )
        job.updated_at = job.finished_at = now
