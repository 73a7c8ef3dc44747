"""Rows to records and back, for images built from ``ImageRecord``'s fields.

The image fields are declared twice only: ``models.Image`` (columns) and ``records.ImageRecord``
(values); ``tests/unit/test_catalog.py`` holds the two in step.

A record field names the model attribute of the same name, except those in ``IMAGE_ATTRIBUTES``
(SQLAlchemy reserves ``metadata``). Values are converted by the record field's type: enums from
and to their string value, JSON mappings copied (and, going in, checked to be JSON).
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from vizdex.core.errors import InvalidInputError
from vizdex.search.models import Collection, Image, Job
from vizdex.search.records import (
    CollectionRecord,
    ImageRecord,
    JobFailure,
    JobRecord,
    JobState,
    ModelState,
    NewImage,
    check_metadata_keys,
)

SHA256 = re.compile(r"^[0-9a-f]{64}$")

# ImageRecord field -> Image attribute, where the names differ.
IMAGE_ATTRIBUTES: Mapping[str, str] = {"metadata": "user_metadata"}

_IMAGE_TYPES: dict[str, Any] = typing.get_type_hints(ImageRecord)
IMAGE_FIELDS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(ImageRecord))
# What a new image brings: NewImage's fields that are also image fields (not its vectors).
NEW_IMAGE_FIELDS: tuple[str, ...] = tuple(
    field.name for field in dataclasses.fields(NewImage) if field.name in _IMAGE_TYPES
)


def image_attribute(name: str) -> str:
    """The ``models.Image`` attribute that stores the ``ImageRecord`` field ``name``."""
    return IMAGE_ATTRIBUTES.get(name, name)


def json_object(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    try:
        plain = json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as error:
        raise InvalidInputError(f"{what} must be a JSON object: {error}") from None
    if not isinstance(plain, dict):
        raise InvalidInputError(f"{what} must be a JSON object")
    return plain


def metadata_object(value: Mapping[str, Any]) -> dict[str, Any]:
    """User metadata as stored: a JSON object whose keys filters can name."""
    plain = json_object(value, "image metadata")
    check_metadata_keys(plain)
    return plain


def _is_enum(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, Enum)


def _is_mapping(kind: Any) -> bool:
    return typing.get_origin(kind) in (Mapping, dict)


def _from_column(kind: Any) -> Callable[[Any], Any] | None:
    if _is_enum(kind):
        return typing.cast(Callable[[Any], Any], kind)
    if _is_mapping(kind):
        return dict  # a copy: a record never shares the row's mutable JSON
    return None


def _to_column(name: str, kind: Any) -> Callable[[Any], Any] | None:
    if _is_enum(kind):
        return lambda value: kind(value).value
    if name == "metadata":
        return metadata_object
    if _is_mapping(kind):
        return lambda value: json_object(value, f"image {name}")
    return None


_READ = [(name, image_attribute(name), _from_column(_IMAGE_TYPES[name])) for name in IMAGE_FIELDS]
_WRITE = [
    (name, image_attribute(name), _to_column(name, _IMAGE_TYPES[name])) for name in NEW_IMAGE_FIELDS
]


def image_record(row: Image) -> ImageRecord:
    values: dict[str, Any] = {}
    for name, attribute, convert in _READ:
        value = getattr(row, attribute)
        values[name] = value if convert is None else convert(value)
    return ImageRecord(**values)


def image_values(item: NewImage) -> dict[str, Any]:
    """The ``models.Image`` attributes of a new image, checked (sha256 lower-cased)."""
    sha = item.sha256.lower()
    if not SHA256.match(sha):
        raise InvalidInputError(f"sha256 {item.sha256!r} is not 64 hex digits")
    if item.width < 0 or item.height < 0 or item.byte_size < 0:
        raise InvalidInputError("width, height and byte size must be >= 0")
    values: dict[str, Any] = {}
    for name, attribute, convert in _WRITE:
        value = getattr(item, name)
        values[attribute] = value if convert is None else convert(value)
    values[image_attribute("sha256")] = sha
    return values


def collection_record(row: Collection) -> CollectionRecord:
    return CollectionRecord(
        id=row.id,
        name=row.name,
        models=tuple(row.models),
        index_factory=row.index_factory,
        exact_max=row.exact_max,
        last_seq=row.last_seq,
        created_at=row.created_at,
        precisions={model: tuple(names) for model, names in (row.precisions or {}).items()},
        model_states={
            model: ModelState(state) for model, state in (row.model_states or {}).items()
        },
        text_model=row.text_model,
        image_model=row.image_model,
        pruned_seq=row.pruned_seq or 0,
    )


def job_record(row: Job) -> JobRecord:
    return JobRecord(
        id=row.id,
        collection_id=row.collection_id,
        kind=row.kind,
        source=row.source,
        state=JobState(row.state),
        total=row.total,
        done=row.done,
        skipped=row.skipped,
        failed=row.failed,
        failures=tuple(
            JobFailure(item=f["item"], code=f["code"], message=f["message"]) for f in row.failures
        ),
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )
