"""Plain, immutable values the catalog hands out and takes in (never live ORM objects)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np

from vizdex.core.errors import InvalidInputError
from vizdex.search.errors import InvalidQueryError

MetadataValue = str | int | float | bool
# Keys end up inside a JSON path expression: keep them to characters that need no escaping there.
METADATA_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\- ]{0,63}$")


def metadata_key_problem(key: object) -> str | None:
    """Why ``key`` cannot be a metadata key, or None: one rule for writes and filters, so every
    key that can be stored can be filtered on."""
    if not isinstance(key, str) or not METADATA_KEY.fullmatch(key):  # no final "\n"
        return (
            f"{key!r} must be 1-64 letters, digits, '_', '-', '.' or spaces, starting with a "
            "letter, digit or '_'"
        )
    return None


def check_metadata_keys(metadata: Mapping[str, Any]) -> None:
    """Refuse (422 ``invalid_metadata_key``, naming the key) a top-level key filters cannot use."""
    for key in metadata:
        problem = metadata_key_problem(key)
        if problem is not None:
            raise InvalidInputError(
                f"metadata key {problem}", code="invalid_metadata_key", key=str(key)
            )


class ModelState(StrEnum):
    """A collection model's state: searches use only ``ready`` ones."""

    BACKFILLING = "backfilling"  # added to a collection that has images: being back-filled
    READY = "ready"


class SourceKind(StrEnum):
    UPLOAD = "upload"
    PATH = "path"
    URL = "url"


class ImageStatus(StrEnum):
    READY = "ready"
    PENDING = "pending"
    FAILED = "failed"


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class CollectionRecord:
    id: int
    name: str
    models: tuple[str, ...]
    index_factory: str | None
    exact_max: int | None
    last_seq: int
    created_at: datetime
    # model -> precisions its vectors were computed in (``vizdex.core.precision``); a model
    # missing here has none recorded.
    precisions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # model -> state; a model missing here is ready (``models`` lists every model, back-filling
    # ones too, since new images get their vectors from the moment a model is added).
    model_states: Mapping[str, ModelState] = field(default_factory=dict)
    # The defaults for text and image queries (None: the rule of ``model_choice``).
    text_model: str | None = None
    image_model: str | None = None
    # Tombstones up to here are pruned: an index behind it rebuilds rather than replays.
    pruned_seq: int = 0

    def state_of(self, model: str) -> ModelState:
        return self.model_states.get(model, ModelState.READY)

    @property
    def ready_models(self) -> tuple[str, ...]:
        return tuple(m for m in self.models if self.state_of(m) is ModelState.READY)


@dataclass(frozen=True)
class FileRef:
    """What an image row makes the data directory keep: its thumbnail, and for uploads and URLs
    its original (content-addressed, so shared by every row of the same content)."""

    sha256: str
    format: str
    source_kind: SourceKind


@dataclass(frozen=True)
class ImageRecord:
    id: int
    collection_id: int
    sha256: str
    source_kind: SourceKind
    source_uri: str | None
    original_name: str | None
    width: int
    height: int
    format: str
    byte_size: int
    source_size: int | None
    source_mtime_ns: int | None
    thumbnail_path: str | None
    metadata: Mapping[str, Any]
    status: ImageStatus
    created_at: datetime
    updated_at: datetime
    # The sequence number of its last metadata change (None: never changed since added), which
    # stores mirroring metadata (Milvus) follow in the change feed.
    metadata_seq: int | None = None


@dataclass(frozen=True)
class NewImage:
    """One image to add: its facts and one vector per model of the collection."""

    sha256: str
    width: int
    height: int
    format: str
    byte_size: int
    vectors: Mapping[str, np.ndarray]
    source_kind: SourceKind = SourceKind.UPLOAD
    source_uri: str | None = None
    original_name: str | None = None
    source_size: int | None = None
    source_mtime_ns: int | None = None
    thumbnail_path: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    status: ImageStatus = ImageStatus.READY


@dataclass(frozen=True)
class AddedImage:
    """Outcome of adding one image: its id, and False when it was already there (same sha256)."""

    id: int
    created: bool


@dataclass(frozen=True)
class JobFailure:
    item: str
    code: str
    message: str


@dataclass(frozen=True)
class JobRecord:
    id: int
    collection_id: int
    kind: str
    source: str | None
    state: JobState
    total: int
    done: int
    skipped: int
    failed: int
    failures: tuple[JobFailure, ...]
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class ChangeSet:
    """What an index at ``after_seq`` must apply to reach ``upto_seq``.

    ``removed_ids`` come first: a re-embedded image appears in both (old vector out, new in).
    """

    after_seq: int
    upto_seq: int
    removed_ids: np.ndarray  # int64
    added_ids: np.ndarray  # int64
    added_vectors: np.ndarray  # float32 [n, dim]

    @property
    def empty(self) -> bool:
        return len(self.removed_ids) == 0 and len(self.added_ids) == 0


def _same_value(stored: Any, wanted: MetadataValue) -> bool:
    """JSON equality without Python's ``True == 1``: a bool only equals a bool."""
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return type(stored) is type(wanted) and stored == wanted
    if isinstance(wanted, str):
        return isinstance(stored, str) and stored == wanted
    return isinstance(stored, int | float) and stored == wanted


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # year 1 at +14:00 is before year 1 in UTC (9999 at -14:00 after)
        raise InvalidQueryError(
            f"created time {value.isoformat()} is outside the years 1 to 9999 in UTC"
        ) from None


@dataclass(frozen=True)
class ImageFilter:
    """Which images a query may return: user-metadata equality and a created-time range.

    ``created_after`` is inclusive, ``created_before`` exclusive; naive datetimes mean UTC.
    """

    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)
    created_after: datetime | None = None
    created_before: datetime | None = None

    def __post_init__(self) -> None:
        for key, value in self.metadata.items():
            problem = metadata_key_problem(key)
            if problem is not None:
                raise InvalidQueryError(f"metadata filter key {problem}", key=str(key))
            if not isinstance(value, str | int | float | bool):
                raise InvalidQueryError(
                    f"metadata filter {key!r} must be a string, number or boolean, "
                    f"not {type(value).__name__}"
                )
        object.__setattr__(self, "created_after", _utc(self.created_after))
        object.__setattr__(self, "created_before", _utc(self.created_before))
        if (
            self.created_after is not None
            and self.created_before is not None
            and self.created_after >= self.created_before
        ):
            raise InvalidQueryError("created_after must be earlier than created_before")

    @property
    def active(self) -> bool:
        return (
            bool(self.metadata)
            or self.created_after is not None
            or (self.created_before is not None)
        )

    def matches(self, image: ImageRecord) -> bool:
        if self.created_after is not None and image.created_at < self.created_after:
            return False
        if self.created_before is not None and image.created_at >= self.created_before:
            return False
        return all(
            key in image.metadata and _same_value(image.metadata[key], value)
            for key, value in self.metadata.items()
        )


@dataclass(frozen=True)
class SourceRow:
    """An image recorded at a source path: what an incremental scan compares a file with."""

    image_id: int
    sha256: str
    size: int | None
    mtime_ns: int | None


@dataclass(frozen=True)
class SourceUpdate:
    """A moved or touched file: the image's new path, name, size and mtime."""

    image_id: int
    source_uri: str
    original_name: str
    size: int | None
    mtime_ns: int | None
