"""Ingestion jobs: progress of large uploads and folder scans."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.params import Parameter

from vizdex.indexer import JobOut
from vizdex.web.routing import READS, route
from vizdex.web.schemas import INT64_MAX
from vizdex.web.state import Vizdex


@route(get, "/jobs/{job_id:int}", READS, summary="An ingestion job's progress")
def get_job(
    job_id: Annotated[int, Parameter(ge=1, le=INT64_MAX, description="job id")],
    vizdex: Vizdex,
) -> JobOut:
    return vizdex.jobs.describe(job_id)
