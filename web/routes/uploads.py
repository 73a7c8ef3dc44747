"""Adding images to a collection: small uploads indexed at once, larger ones as a job."""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated, Any, ClassVar

import anyio.to_thread
import msgspec
from litestar import Request, Response, post
from litestar.datastructures import UploadFile
from litestar.exceptions import ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED

from vizdex.core.errors import InvalidInputError
from vizdex.encoders.batching import QueueFullError
from vizdex.imaging import read_input
from vizdex.indexer import IngestReport, IngestRequest, JobFailureOut, Upload
from vizdex.search import JobRecord
from vizdex.web.inputs import read_upload
from vizdex.web.limits import body_kind, read_form, read_json
from vizdex.web.openapi import WRITE, body_operation, error_responses, multipart_schema
from vizdex.web.routing import route
from vizdex.web.schemas import (
    EMPTY_METADATA,
    METADATA_SCHEMA,
    SEQ_HEADER,
    CollectionName,
    ImageString,
    ImageUrl,
    JsonSchema,
    Metadata,
    Rules,
    check_metadata,
    exactly_one_of,
)
from vizdex.web.state import ServiceState, Vizdex

MAX_ITEMS = 1000
# The indexer takes URLs without names or metadata (set them with PATCH later): a URL item
# has no (or an empty) `name` and `metadata`, and no URL item goes with request-wide metadata.
NO_NAME: JsonSchema = {"enum": [None, ""]}
URL_ITEM: JsonSchema = {"properties": {"name": NO_NAME, "metadata": EMPTY_METADATA}}
NO_URL_ITEMS: JsonSchema = {
    "properties": {"images": {"items": {"properties": {"url": {"type": "null"}}}}}
}


class UploadItemIn(msgspec.Struct, forbid_unknown_fields=True):
    """One image: base64 ``data`` (or a ``data:`` URL), or an http(s) ``url`` where the server
    allows URLs. ``metadata`` is merged over the request's; URL items carry no metadata."""

    schema_rules: ClassVar[Rules] = (
        exactly_one_of("data", "url"),
        {"if": {"required": ["url"], "properties": {"url": {"type": "string"}}}, "then": URL_ITEM},
    )

    data: ImageString | None = None
    url: ImageUrl | None = None
    name: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    metadata: Metadata | None = None


class UploadRequest(msgspec.Struct, forbid_unknown_fields=True):
    schema_rules: ClassVar[Rules] = (
        {"anyOf": [{"properties": {"metadata": EMPTY_METADATA}}, NO_URL_ITEMS]},
    )

    images: Annotated[list[UploadItemIn], msgspec.Meta(min_length=1, max_length=MAX_ITEMS)]
    metadata: Metadata | None = None  # applied to every image


class UploadResult(msgspec.Struct):
    """One per image sent, in request order: ``index`` is its position in the request, ``name``
    its file name (a URL item's: the URL). ``status``: ``indexed`` (new ``id``), ``duplicate``
    (the existing ``id``) or ``failed`` (with ``code`` and ``detail``)."""

    index: int
    name: str | None
    status: str
    id: int | None = None
    code: str | None = None
    detail: str | None = None


class UploadResponse(msgspec.Struct):
    """Small uploads are indexed before the answer (200/201, with ``results`` and ``seq``, the
    collection's sequence number after the write: a search's ``min_seq`` on any replica);
    larger ones are accepted as a job (202): follow ``job_url`` for progress (and its ``seq``)."""

    job_id: int
    job_url: str
    state: str
    indexed: int
    duplicates: int
    failed: int
    results: list[UploadResult] | None = None
    failures: list[JobFailureOut] | None = None
    seq: int | None = None


def _job_url(job_id: int) -> str:
    return f"/v1/jobs/{job_id}"


def _merge(base: Metadata | None, own: Metadata | None) -> Metadata:
    return check_metadata({**(base or {}), **(own or {})})


def _from_json(vizdex: ServiceState, body: UploadRequest) -> tuple[IngestRequest, int]:
    uploads: list[Upload] = []
    urls: list[str] = []
    upload_positions: list[int] = []
    url_positions: list[int] = []
    size = 0
    for index, item in enumerate(body.images):
        if (item.data is None) == (item.url is None):
            raise InvalidInputError(f"image {index}: give exactly one of `data` or `url`")
        if item.url is not None:
            if item.metadata or item.name or body.metadata:
                # The indexer takes URLs without names or metadata (set them with PATCH later).
                raise InvalidInputError(
                    f"image {index}: URL items cannot carry `metadata` or `name` yet; send the "
                    "URLs in a request without metadata"
                )
            urls.append(item.url)
            url_positions.append(index)
            continue
        assert item.data is not None
        data = read_input({"data": item.data}, vizdex.settings.images)
        size += len(data)
        uploads.append(Upload(data, item.name, _merge(body.metadata, item.metadata)))
        upload_positions.append(index)
    # Each item's outcome is numbered by its place in the request, uploads and URLs alike.
    request = IngestRequest(
        uploads=tuple(uploads), urls=tuple(urls), positions=(*upload_positions, *url_positions)
    )
    return request, size


def _from_files(
    vizdex: ServiceState, files: list[UploadFile], metadata: Metadata | None
) -> tuple[IngestRequest, int]:
    uploads = [
        Upload(
            read_upload(upload, vizdex.settings.images),
            upload.filename or None,
            check_metadata(metadata or {}),
        )
        for upload in files
    ]
    return IngestRequest(uploads=tuple(uploads)), sum(len(u.data) for u in uploads)


def _results(report: IngestReport) -> list[UploadResult]:
    return [
        UploadResult(
            index=outcome.index,
            name=outcome.name,
            status=outcome.status,
            id=outcome.image_id,
            code=outcome.code,
            detail=outcome.message,
        )
        for outcome in report.uploads
    ]


def _ingest(
    vizdex: ServiceState, collection: str, request: IngestRequest, size: int
) -> Response[UploadResponse]:
    limits = vizdex.settings.limits
    count = len(request.uploads) + len(request.urls)
    indexer = vizdex.indexer
    if count <= limits.upload_sync_images and size <= limits.upload_sync_bytes:
        report = indexer.ingest(collection, request)
        vizdex.metrics.images_added.labels(collection).inc(report.indexed)
        seq = vizdex.search.collection_seq(collection)
        return Response(
            UploadResponse(
                job_id=report.job_id,
                job_url=_job_url(report.job_id),
                state=report.state.value,
                indexed=report.indexed,
                duplicates=report.skipped,  # and URLs this collection already has
                failed=report.failed,
                results=_results(report),
                failures=[JobFailureOut(f.item, f.code, f.message) for f in report.failures],
                seq=seq,
            ),
            status_code=HTTP_201_CREATED if report.indexed else HTTP_200_OK,
            headers={SEQ_HEADER: str(seq)},
        )
    _check_room(vizdex)
    job: JobRecord = indexer.submit(collection, request)
    return Response(
        UploadResponse(
            job_id=job.id,
            job_url=_job_url(job.id),
            state=job.state.value,
            indexed=0,
            duplicates=0,
            failed=0,
        ),
        status_code=HTTP_202_ACCEPTED,
        headers={"Location": _job_url(job.id)},
    )


def _check_room(vizdex: ServiceState) -> None:
    """Background uploads hold their bytes until their turn: only a few may wait."""
    limit = vizdex.settings.limits.pending_jobs
    waiting = vizdex.jobs.count_pending(up_to=limit + 1)
    if waiting >= limit:
        raise QueueFullError(
            f"{waiting} ingestion jobs are already waiting; retry when one has finished",
            retry_after=30,
        )


_UPLOAD_FORM = multipart_schema(
    "images",
    MAX_ITEMS,
    {"metadata": {**METADATA_SCHEMA, "description": "JSON metadata for every image"}},
)


@route(
    post,
    "/collections/{name:str}/images",
    summary="Add images to a collection",
    description="Multipart image files (with an optional `metadata` JSON field), or JSON with "
    "base64 / URL items. Duplicates (same bytes) answer with the existing id.",
    operation_class=body_operation(
        UploadRequest, _UPLOAD_FORM, json_fields={"metadata": "application/json"}
    ),
    responses={
        200: ResponseSpec(
            UploadResponse, description="Indexed; nothing new", generate_examples=False
        ),
        202: ResponseSpec(UploadResponse, description="Accepted as a job", generate_examples=False),
        **error_responses(*WRITE, 415, 429),
    },
)
async def upload_images(
    name: CollectionName, request: Request[Any, Any, Any], vizdex: Vizdex
) -> Response[UploadResponse]:
    started = time.perf_counter()
    if body_kind(request) == "json":
        body = await read_json(request, UploadRequest, vizdex.settings.limits.json_bytes)
        build = partial(_from_json, vizdex, body)
    else:
        form = await read_form(request, min(MAX_ITEMS, vizdex.settings.limits.upload_files))
        if not form.files:
            raise ValidationException("send one or more image files as multipart parts")
        metadata = form.json("metadata", dict[str, Any])
        build = partial(_from_files, vizdex, form.files, metadata)

    def work() -> Response[UploadResponse]:
        vizdex.search.get_collection(name)  # 404 before reading every upload
        ingest, size = build()
        return _ingest(vizdex, name, ingest, size)

    response = await anyio.to_thread.run_sync(work)
    response.headers["Server-Timing"] = f"total;dur={(time.perf_counter() - started) * 1000:.1f}"
    return response
