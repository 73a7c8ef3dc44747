"""SQLAlchemy models of the catalog: the source of truth, vectors included.

Ids never get reused (``sqlite_autoincrement``): image ids are FAISS ids and tombstones refer to
them, so a recycled id could resurrect a deleted image in an index snapshot.

Every change that an index must see gets a sequence number from its collection's counter
(``collections.last_seq``), bumped inside the writing transaction. That row is locked until commit,
so sequence numbers become visible in commit order: "everything up to N" is a well-defined state
that an index snapshot can claim to contain.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an "INTEGER PRIMARY KEY"; elsewhere ids are 64-bit.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[str]: JSON(),
        list[dict[str, Any]]: JSON(),
    }


class Collection(Base):
    __tablename__ = "collections"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    models: Mapped[list[str]]
    # Index settings; None means "use the service-wide default".
    index_factory: Mapped[str | None] = mapped_column(String(200))
    exact_max: Mapped[int | None] = mapped_column(Integer)
    # model -> the precisions (vizdex.core.precision) its vectors here were computed in; a model
    # without an entry has none recorded (vectors from before 0003, or given by a caller).
    precisions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # model -> "backfilling" while a model added later is embedding the images already here; a
    # model without an entry is ready (records.ModelState).
    model_states: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The models text and image queries use when they name none (None: model_choice's rule).
    text_model: Mapped[str | None] = mapped_column(String(200))
    image_model: Mapped[str | None] = mapped_column(String(200))
    # Tombstones with seq <= pruned_seq were deleted: an index behind it must rebuild.
    pruned_seq: Mapped[int] = mapped_column(BigInteger, default=0)


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("collection_id", "sha256"),
        Index("ix_images_collection_created", "collection_id", "created_at"),
        Index("ix_images_collection_source", "collection_id", "source_uri"),
        Index("ix_images_collection_status", "collection_id", "status"),
        Index("ix_images_collection_metadata_seq", "collection_id", "metadata_seq"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64))
    source_kind: Mapped[str] = mapped_column(String(16))
    source_uri: Mapped[str | None] = mapped_column(Text)
    original_name: Mapped[str | None] = mapped_column(Text)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))
    byte_size: Mapped[int] = mapped_column(BigInteger)
    # stat() of a path source at ingestion: lets a rescan skip unchanged files without hashing.
    source_size: Mapped[int | None] = mapped_column(BigInteger)
    source_mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    thumbnail_path: Mapped[str | None] = mapped_column(Text)
    user_metadata: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="ready")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # The sequence number of the last metadata change (or request to mirror the image again):
    # stores that mirror metadata (Milvus) follow it from the feed. None: never changed.
    metadata_seq: Mapped[int | None] = mapped_column(BigInteger)


class Embedding(Base):
    __tablename__ = "embeddings"
    __table_args__ = (Index("ix_embeddings_replay", "collection_id", "model", "seq", unique=True),)

    image_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    # Denormalised from the image so that replay is one index range scan.
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class EmbeddingTombstone(Base):
    """A vector that left the index (image deleted or re-embedded), replayable by ``seq``."""

    __tablename__ = "embedding_tombstones"
    __table_args__ = (
        Index("ix_embedding_tombstones_replay", "collection_id", "model", "seq"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(200))
    image_id: Mapped[int] = mapped_column(BigInteger)  # no FK: the image is usually gone
    seq: Mapped[int] = mapped_column(BigInteger)
    deleted_at: Mapped[datetime] = mapped_column(default=utcnow)


class VectorStorePosition(Base):
    """How far an external vector store (Milvus) has applied one collection's change feed for one
    model: its follower's watermark, written after each batch it applied, resumed from on start.

    ``store`` names the target (its URI or lite file), so two Milvus deployments following one
    catalog keep separate positions. ``index_type`` is the collection's Milvus index type.
    """

    __tablename__ = "vector_store_positions"

    store: Mapped[str] = mapped_column(String(300), primary_key=True)
    collection_id: Mapped[int] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True
    )
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    applied_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    index_type: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class VectorStoreTerm(Base):
    """The fencing token of an external vector store's follower: each process that becomes the
    follower takes the next ``term``, and a watermark write carries its term and is refused once
    another has taken a newer one (a leader paused through a takeover cannot move it back)."""

    __tablename__ = "vector_store_terms"

    store: Mapped[str] = mapped_column(String(300), primary_key=True)
    term: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_collection_state", "collection_id", "state"),
        Index("ix_jobs_state", "state"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    source: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None]


class WorkItem(Base):
    """One chunk of a queued ingestion job, claimed by one worker at a time under a lease.

    ``state``: queued → running (``owner``, ``lease_until``) → done / failed / cancelled. A running
    chunk whose lease ran out (its worker died) is claimed again by another worker, which resumes
    it: what the dead worker committed is found in the catalog and skipped. ``done``, ``skipped``
    and ``failed`` are this chunk's share of the job's counters, taken back from the job when the
    chunk starts over, so the job's counters stay exact.
    """

    __tablename__ = "work_items"
    __table_args__ = (
        Index("ix_work_items_claim", "state", "lease_until"),
        Index("ix_work_items_job", "job_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"))
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    payload: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16), default="queued")
    owner: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
