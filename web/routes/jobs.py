"""Ingestion jobs: progress of large uploads and folder scans."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.params import Parameter

from vizdex.search import CollectionNotFoundError
from vizdex.web.auth import READ_ONLY
from vizdex.web.openapi import READ, error_responses
from vizdex.web.schemas import INT64_MAX
from vizdex.web.state import Vizdex
from vizdex.web.views import JobOut, job_out


@get(
    "/jobs/{job_id:int}",
    sync_to_thread=True,
    tags=["jobs"],
    summary="An ingestion job's progress",
    opt=READ_ONLY,
    responses=error_responses(*READ),
)
def get_job(
    job_id: Annotated[int, Parameter(ge=1, le=INT64_MAX, description="job id")],
    vizdex: Vizdex,
) -> JobOut:
    catalog = vizdex.search.catalog
    record = catalog.get_job(job_id)
    try:
        collection: str | None = catalog.get_collection_by_id(record.collection_id).name
    except CollectionNotFoundError:
        collection = None
    return job_out(record, collection)
