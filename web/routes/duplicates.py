"""Near-duplicate groups of a collection: at once for small collections, else as a job."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from vizdex.encoders.batching import QueueFullError
from vizdex.search import (
    DUPLICATE_THRESHOLD,
    DuplicateOptions,
    DuplicatePage,
    DuplicateScan,
    KeeperRule,
)
from vizdex.web.auth import READ_ONLY
from vizdex.web.openapi import ENCODE, READ, error_responses
from vizdex.web.routing import route
from vizdex.web.schemas import (
    CollectionName,
    Int32,
    JobIdParam,
    MinSeq,
    ModelName,
    SearchFilter,
    documented,
    image_filter,
)
from vizdex.web.state import ServiceState, Vizdex
from vizdex.web.views import image_url

MAX_GROUPS = 500  # groups per page
DEFAULT_GROUPS = 50


class DuplicatesRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``threshold``: the cosine similarity at or above which two images count as copies,
    between -1 and 1. ``model``: one of the collection's models (default: its vision-only model,
    e.g. DINOv3, else its first). ``filter``: only images matching it are grouped. ``prefer``:
    which copy each group suggests keeping. ``offset``/``limit``: a page of groups. ``min_seq``:
    as a search's, scan only once this replica has applied that write (else 503
    ``not_caught_up``)."""

    threshold: Annotated[float, documented(minimum=-1.0, maximum=1.0)] = DUPLICATE_THRESHOLD
    model: ModelName | None = None
    filter: SearchFilter | None = None
    prefer: KeeperRule = KeeperRule.PIXELS
    offset: Int32 = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_GROUPS)] = DEFAULT_GROUPS
    min_seq: MinSeq | None = None


class DuplicateImageOut(msgspec.Struct):
    id: int
    similarity: float  # cosine to the group's representative
    keeper: bool  # the copy the `prefer` rule suggests keeping
    representative: bool  # the group's most typical copy
    original_name: str | None
    width: int
    height: int
    format: str
    byte_size: int
    created_at: datetime
    metadata: dict[str, Any]
    thumbnail_url: str
    file_url: str


class DuplicateGroupOut(msgspec.Struct):
    """One group, the keeper first; ``key`` names this exact set of images."""

    key: str
    size: int
    keeper_id: int
    representative_id: int
    images: list[DuplicateImageOut]


class DuplicatesResponse(msgspec.Struct):
    """A page of groups, largest first. ``total_groups``/``total_images``: in the whole scan.
    ``next_offset``: the next page's ``offset`` (null: no more)."""

    collection: str
    model: str
    threshold: float
    prefer: str
    approximate: bool
    nprobe: int
    scanned: int
    pairs: int
    total_groups: int
    total_images: int
    offset: int
    limit: int
    next_offset: int | None
    groups: list[DuplicateGroupOut]
    from_job: int | None  # the job whose stored scan this page is from (null: scanned now)
    processing_time: float


class DuplicatesJobOut(msgspec.Struct):
    """A large collection's scan, accepted as a job: follow ``job_url``; once it is ``done``,
    read pages of groups from ``result_url``."""

    job_id: int
    job_url: str
    result_url: str
    state: str


def _result_url(collection: str, job_id: int) -> str:
    return f"/v1/collections/{collection}/duplicates/{job_id}"


def _response(page: DuplicatePage, job_id: int | None, started: float) -> DuplicatesResponse:
    scan = page.scan
    name = scan.collection
    after = page.offset + page.limit
    return DuplicatesResponse(
        collection=name,
        model=scan.model,
        threshold=scan.threshold,
        prefer=page.prefer.value,
        approximate=scan.approximate,
        nprobe=scan.nprobe,
        scanned=scan.scanned,
        pairs=scan.pairs,
        total_groups=len(scan.groups),
        total_images=scan.images,
        offset=page.offset,
        limit=page.limit,
        next_offset=after if after < len(scan.groups) else None,
        groups=[
            DuplicateGroupOut(
                key=group.key,
                size=len(group.members),
                keeper_id=group.keeper_id,
                representative_id=group.representative_id,
                images=[
                    DuplicateImageOut(
                        id=member.image.id,
                        similarity=round(member.similarity, 6),
                        keeper=member.keeper,
                        representative=member.representative,
                        original_name=member.image.original_name,
                        width=member.image.width,
                        height=member.image.height,
                        format=member.image.format,
                        byte_size=member.image.byte_size,
                        created_at=member.image.created_at,
                        metadata=dict(member.image.metadata),
                        thumbnail_url=image_url(name, member.image.id, "thumbnail"),
                        file_url=image_url(name, member.image.id, "file"),
                    )
                    for member in group.members
                ],
            )
            for group in page.groups
        ],
        from_job=job_id,
        processing_time=round(time.perf_counter() - started, 4),
    )


def _check_room(vizdex: ServiceState) -> None:
    """Queued scans wait their turn on one thread: only a few may wait (as uploads)."""
    limit = vizdex.settings.limits.pending_jobs
    waiting = vizdex.jobs.count_pending(up_to=limit + 1)
    if waiting >= limit:
        raise QueueFullError(
            f"{waiting} jobs are already waiting; retry when one has finished", retry_after=30
        )


@route(
    post,
    "/collections/{name:str}/duplicates",
    opt=READ_ONLY,
    status_code=HTTP_200_OK,
    summary="Near-duplicate groups of a collection",
    description="Groups of images at or above a cosine threshold of each other (connected: "
    "transitive), each with a suggested keeper. Large collections answer 202 with a job.",
    responses={
        200: ResponseSpec(DuplicatesResponse, description="A page of groups"),
        202: ResponseSpec(
            DuplicatesJobOut, description="Accepted as a job", generate_examples=False
        ),
        **error_responses(*ENCODE),
    },
)
def find_duplicates(
    name: CollectionName, data: JSONBody[DuplicatesRequest], vizdex: Vizdex
) -> Response[DuplicatesResponse | DuplicatesJobOut]:
    started = time.perf_counter()
    options = DuplicateOptions(
        threshold=data.threshold, model=data.model, filters=image_filter(data.filter)
    )
    # A scan reads the catalog up to its current position; `min_seq` first makes sure this
    # replica's index holds the write the caller means (a queued scan starts from there too).
    vizdex.search.catch_up(name, data.min_seq)
    finder = vizdex.search.duplicates
    if finder.size(name, options) <= vizdex.settings.limits.duplicates_sync_images:
        scan = finder.scan(name, options)
        page = finder.page(scan, offset=data.offset, limit=data.limit, prefer=data.prefer)
        return Response(_response(page, None, started), status_code=HTTP_200_OK)
    _check_room(vizdex)
    job = vizdex.duplicate_jobs.submit(name, options)
    job_url = f"/v1/jobs/{job.id}"
    return Response(
        DuplicatesJobOut(
            job_id=job.id,
            job_url=job_url,
            result_url=_result_url(name, job.id),
            state=job.state.value,
        ),
        status_code=HTTP_202_ACCEPTED,
        headers={"Location": job_url},
    )


@route(
    get,
    "/collections/{name:str}/duplicates/{job_id:int}",
    opt=READ_ONLY,
    summary="A page of a finished duplicate scan's groups",
    responses=error_responses(*READ, 409),
)
def duplicates_result(
    name: CollectionName,
    job_id: JobIdParam,
    vizdex: Vizdex,
    offset: Annotated[
        int,
        Parameter(ge=0, le=2**31 - 1, schema_extra={"minimum": 0, "maximum": 2**31 - 1}),
    ] = 0,
    limit: Annotated[
        int, Parameter(ge=1, le=MAX_GROUPS, schema_extra={"minimum": 1, "maximum": MAX_GROUPS})
    ] = DEFAULT_GROUPS,
    prefer: Annotated[
        KeeperRule, Parameter(description="which copy each group suggests keeping")
    ] = KeeperRule.PIXELS,
) -> DuplicatesResponse:
    started = time.perf_counter()
    scan: DuplicateScan = vizdex.duplicate_jobs.result(name, job_id)
    page = vizdex.search.duplicates.page(scan, offset=offset, limit=limit, prefer=prefer)
    return _response(page, job_id, started)
