"""An ingestion job as it is shown: the API's ``JobOut`` body and the CLI's JSON rows.

``job_out`` is the one mapping from a ``JobRecord``, so ``GET /v1/jobs/{id}`` and ``vizdex jobs``
cannot drift apart; ``job_json`` is that same view as ``vizdex jobs --json`` has always printed it
(timestamps to the second, no ``progress``, its own key order). Only msgspec and search records
here, no torch and no web app, so the CLI and the API both import it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from vizdex.search import JobRecord, JobState


class JobFailureOut(msgspec.Struct):
    item: str
    code: str
    message: str


class JobOut(msgspec.Struct):
    id: int
    collection: str | None  # None once the collection was deleted
    kind: str
    source: str | None
    state: str
    total: int
    done: int
    skipped: int
    failed: int
    progress: float  # (done + skipped + failed) / total: 1.0 once done, the share reached else
    failures: list[JobFailureOut]
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    # Once done: the collection's sequence number, covering every write of the job (a
    # search's `min_seq` on any replica). None before, or once the collection is gone.
    seq: int | None = None


def job_out(record: JobRecord, collection: str | None, seq: int | None = None) -> JobOut:
    handled = record.done + record.skipped + record.failed
    if record.state is JobState.DONE:
        progress = 1.0  # also when nothing was found to do (total 0)
    else:  # a failed or cancelled job shows how far it got, not a full bar
        progress = min(1.0, handled / record.total) if record.total else 0.0
    return JobOut(
        id=record.id,
        collection=collection,
        kind=record.kind,
        source=record.source,
        state=record.state.value,
        total=record.total,
        done=record.done,
        skipped=record.skipped,
        failed=record.failed,
        progress=progress,
        failures=[JobFailureOut(f.item, f.code, f.message) for f in record.failures],
        error=record.error,
        created_at=record.created_at,
        updated_at=record.updated_at,
        finished_at=record.finished_at,
        seq=seq,
    )


def _seconds(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def job_json(job: JobOut) -> dict[str, Any]:
    """``job`` as ``vizdex jobs --json`` prints it."""
    return {
        "id": job.id,
        "collection": job.collection,
        "kind": job.kind,
        "source": job.source,
        "state": job.state,
        "total": job.total,
        "done": job.done,
        "skipped": job.skipped,
        "failed": job.failed,
        "error": job.error,
        "created_at": _seconds(job.created_at),
        "updated_at": _seconds(job.updated_at),
        "finished_at": _seconds(job.finished_at) if job.finished_at else None,
        "failures": [{"item": f.item, "code": f.code, "message": f.message} for f in job.failures],
    }
