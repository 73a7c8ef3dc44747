"""Ingestion jobs: progress of large uploads and folder scans."""

from __future__ import annotations

from litestar import get

from vizdex.indexer import JobOut
from vizdex.web.routing import READS, route
from vizdex.web.schemas import JobIdParam
from vizdex.web.state import Vizdex


@route(get, "/jobs/{job_id:int}", READS, summary="An ingestion job's progress")
def get_job(job_id: JobIdParam, vizdex: Vizdex) -> JobOut:
    return vizdex.jobs.describe(job_id)
