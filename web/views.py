"""Catalog records as response bodies (plain values in, msgspec structs out).

A job's body (``JobOut``) lives with the indexer's jobs, which the CLI shows too.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

import msgspec

from vizdex.search import CollectionRecord, CollectionSummary, ImageRecord

# The image view is built from ImageRecord, so a new image field needs only the model and the
# record: every record field, less those that stay on the server (stat data for rescans, where
# thumbnails are stored, the feed position of its metadata), the collection's name in place of
# its id, `source` for `source_kind`, enums as their string values; then the links to the file
# and the thumbnail.
_IMAGE_HIDDEN = frozenset({"source_size", "source_mtime_ns", "thumbnail_path", "metadata_seq"})
_IMAGE_RENAMED = {"collection_id": "collection", "source_kind": "source"}
# (record field, view field) in the record's order.
_IMAGE_SHOWN = tuple(
    (f.name, _IMAGE_RENAMED.get(f.name, f.name))
    for f in dataclasses.fields(ImageRecord)
    if f.name not in _IMAGE_HIDDEN
)


def _wire_type(name: str, kind: Any) -> Any:
    if name == "collection_id" or (isinstance(kind, type) and issubclass(kind, Enum)):
        return str
    if typing.get_origin(kind) is Mapping:
        return dict[str, Any]
    return kind


def _wire_value(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return dict(value)
    return value


if TYPE_CHECKING:
    ImageOut = msgspec.Struct  # its fields exist only at run time, built below
else:
    _types = typing.get_type_hints(ImageRecord)
    ImageOut = msgspec.defstruct(
        "ImageOut",
        [
            *((shown, _wire_type(name, _types[name])) for name, shown in _IMAGE_SHOWN),
            ("file_url", str),
            ("thumbnail_url", str),
        ],
        module=__name__,
    )


class IndexOut(msgspec.Struct):
    model: str
    kind: str  # flat, ivf, ...
    vectors: int
    dimensions: int


class ModelStateOut(msgspec.Struct):
    """One model of a collection: ``backfilling`` (queries do not use it yet) or ``ready``;
    ``coverage`` is the share of the collection's images that have its vector (0 to 1)."""

    model: str
    state: str
    vectors: int
    coverage: float
    default_for: list[str]  # "text", "image"


class CollectionOut(msgspec.Struct):
    name: str
    models: list[str]
    image_count: int
    created_at: datetime
    index_factory: str | None = None
    exact_max: int | None = None
    indexes: list[IndexOut] | None = None  # only when asking for one collection
    # model -> the precisions its vectors were computed in ({} : none recorded yet)
    precisions: dict[str, list[str]] = msgspec.field(default_factory=dict)
    # The models text and image queries use when they name none (null: the model rule).
    text_model: str | None = None
    image_model: str | None = None
    # model -> state; every model is listed ("ready" or "backfilling").
    states: dict[str, str] = msgspec.field(default_factory=dict)
    model_states: list[ModelStateOut] | None = None  # only when asking for one collection


class CollectionList(msgspec.Struct):
    collections: list[CollectionOut]


class ImagePage(msgspec.Struct):
    """Images in id order; pass ``next_after`` as ``after`` for the next page (null: no more)."""

    images: list[ImageOut]
    next_after: int | None


def image_url(collection: str, image_id: int, what: str) -> str:
    return f"/v1/collections/{collection}/images/{image_id}/{what}"


def image_out(collection: str, record: ImageRecord) -> ImageOut:
    values = {shown: _wire_value(getattr(record, name)) for name, shown in _IMAGE_SHOWN}
    values["collection"] = collection
    return ImageOut(
        **values,
        file_url=image_url(collection, record.id, "file"),
        thumbnail_url=image_url(collection, record.id, "thumbnail"),
    )


def model_states_out(
    record: CollectionRecord,
    image_count: int,
    vectors: Mapping[str, int],
    answering: Mapping[str, str | None] | None = None,
) -> list[ModelStateOut]:
    # default_for: the model that answers, stored default or the model rule's pick.
    defaults = answering or {"text": record.text_model, "image": record.image_model}
    return [
        ModelStateOut(
            model=model,
            state=record.state_of(model).value,
            vectors=vectors.get(model, 0),
            coverage=1.0 if image_count == 0 else min(1.0, vectors.get(model, 0) / image_count),
            default_for=[use for use, name in defaults.items() if name == model],
        )
        for model in record.models
    ]


def collection_out(
    record: CollectionRecord,
    image_count: int,
    indexes: list[IndexOut] | None = None,
    model_states: list[ModelStateOut] | None = None,
) -> CollectionOut:
    return CollectionOut(
        name=record.name,
        models=list(record.models),
        image_count=image_count,
        created_at=record.created_at,
        index_factory=record.index_factory,
        exact_max=record.exact_max,
        indexes=indexes,
        precisions={model: list(names) for model, names in record.precisions.items()},
        text_model=record.text_model,
        image_model=record.image_model,
        states={model: record.state_of(model).value for model in record.models},
        model_states=model_states,
    )


def summary_out(summary: CollectionSummary) -> CollectionOut:
    """A collection with its count, and its indexes when the summary has them."""
    indexes = None
    if summary.index_details is not None:
        indexes = [
            IndexOut(model=info.model, kind=info.kind, vectors=info.count, dimensions=info.dim)
            for info in summary.index_details
        ]
    states = None
    if summary.vectors is not None:
        states = model_states_out(
            summary.record, summary.image_count, summary.vectors, summary.answering
        )
    return collection_out(summary.record, summary.image_count, indexes, states)
