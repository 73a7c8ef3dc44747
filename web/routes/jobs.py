"""Ingestion jobs: progress of large uploads and folder scans, and stopping them."""

from __future__ import annotations

from litestar import get, post
from litestar.status_codes import HTTP_202_ACCEPTED

from vizdex.indexer import JobOut
from vizdex.web.routing import READS, WRITES, route
from vizdex.web.schemas import JobIdParam
from vizdex.web.state import Vizdex


@route(get, "/jobs/{job_id:int}", READS, summary="An ingestion job's progress")
def get_job(job_id: JobIdParam, vizdex: Vizdex) -> JobOut:
    return vizdex.jobs.describe(job_id)


@route(
    post,
    "/jobs/{job_id:int}/cancel",
    WRITES,
    status_code=HTTP_202_ACCEPTED,
    summary="Stop a job after its current batch",
)
def cancel_job(job_id: JobIdParam, vizdex: Vizdex) -> JobOut:
    return vizdex.jobs.cancel(job_id)
