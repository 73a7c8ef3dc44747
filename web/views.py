"""Catalog records as response bodies (plain values in, msgspec structs out)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from vizdex.search import CollectionRecord, ImageRecord, JobRecord


class ImageOut(msgspec.Struct):
    id: int
    collection: str
    sha256: str
    source: str  # upload | path | url
    source_uri: str | None
    original_name: str | None
    width: int
    height: int
    format: str
    byte_size: int
    metadata: dict[str, Any]
    status: str
    created_at: datetime
    updated_at: datetime
    file_url: str
    thumbnail_url: str


class IndexOut(msgspec.Struct):
    model: str
    kind: str  # flat, ivf, ...
    vectors: int
    dimensions: int


class CollectionOut(msgspec.Struct):
    name: str
    models: list[str]
    image_count: int
    created_at: datetime
    index_factory: str | None = None
    exact_max: int | None = None
    indexes: list[IndexOut] | None = None  # only when asking for one collection


class CollectionList(msgspec.Struct):
    collections: list[CollectionOut]


class ImagePage(msgspec.Struct):
    """Images in id order; pass ``next_after`` as ``after`` for the next page (null: no more)."""

    images: list[ImageOut]
    next_after: int | None


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
    progress: float  # (done + skipped + failed) / total, 1.0 when finished
    failures: list[JobFailureOut]
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


def image_url(collection: str, image_id: int, what: str) -> str:
    return f"/v1/collections/{collection}/images/{image_id}/{what}"


def image_out(collection: str, record: ImageRecord) -> ImageOut:
    return ImageOut(
        id=record.id,
        collection=collection,
        sha256=record.sha256,
        source=record.source_kind.value,
        source_uri=record.source_uri,
        original_name=record.original_name,
        width=record.width,
        height=record.height,
        format=record.format,
        byte_size=record.byte_size,
        metadata=dict(record.metadata),
        status=record.status.value,
        created_at=record.created_at,
        updated_at=record.updated_at,
        file_url=image_url(collection, record.id, "file"),
        thumbnail_url=image_url(collection, record.id, "thumbnail"),
    )


def collection_out(
    record: CollectionRecord, image_count: int, indexes: list[IndexOut] | None = None
) -> CollectionOut:
    return CollectionOut(
        name=record.name,
        models=list(record.models),
        image_count=image_count,
        created_at=record.created_at,
        index_factory=record.index_factory,
        exact_max=record.exact_max,
        indexes=indexes,
    )


def job_out(record: JobRecord, collection: str | None) -> JobOut:
    handled = record.done + record.skipped + record.failed
    if record.state.finished:
        progress = 1.0
    else:
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
    )
