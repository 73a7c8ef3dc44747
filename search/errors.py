"""Catalog, index and query errors, all inside the one hierarchy of ``vizdex.core.errors``."""

from __future__ import annotations

from vizdex.core.errors import (
    CapabilityError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)


class CollectionNotFoundError(NotFoundError):
    code = "collection_not_found"


class ImageNotFoundError(NotFoundError):
    code = "image_not_found"


class JobNotFoundError(NotFoundError):
    code = "job_not_found"


class CollectionExistsError(ConflictError):
    code = "collection_exists"


class SchemaOutOfDateError(ConflictError):
    """The catalog database is older than this vizdex; ``vizdex db upgrade`` fixes it."""

    code = "schema_out_of_date"


class SchemaMismatchError(ConflictError):
    """The catalog database is newer than this vizdex, or not a vizdex catalog at all."""

    code = "schema_mismatch"


class InvalidQueryError(InvalidInputError):
    """A search option or query value is out of range (k, offset, filter, vector shape)."""

    code = "invalid_query"


class ModelNotLoadedError(ConflictError):
    """The collection is embedded with a model whose encoder is not loaded in this process: the
    server's configuration and the collection disagree (409), and no other model stands in."""

    code = "model_not_loaded"


class IndexCorruptError(UnavailableError):
    """An index file failed verification; the index is rebuilt from the catalog."""

    code = "index_corrupt"


class PrecisionMismatchError(ConflictError):
    """Vectors of this precision may not join those the collection holds (too far apart)."""

    code = "precision_mismatch"


class NotCaughtUpError(UnavailableError):
    """A search asked for ``min_seq`` and this replica's indexes did not reach it in time."""

    code = "not_caught_up"
    retry_after = 1  # seconds: replicas follow the change feed every second


class ModelNotReadyError(ConflictError):
    """A model being back-filled was asked to answer, or to become a default, before it covers
    every image of the collection."""

    code = "model_not_ready"


class ModelInUseError(ConflictError):
    """A model that is a collection's default (or its only one) cannot be removed."""

    code = "model_in_use"


class VectorStoreUnavailableError(UnavailableError):
    """The external vector store (Milvus) cannot be reached or refused an operation."""

    code = "vector_store_unavailable"


class IndexTypeRefusedError(CapabilityError):
    """A vector index type this vector store cannot really build (e.g. a GPU index on
    milvus-lite, which would silently search without it)."""

    code = "index_type_refused"


class FollowerFencedError(ConflictError):
    """A vector store follower's term was overtaken: another process became the follower, so
    this one's watermark write is refused (it stands down)."""

    code = "follower_fenced"


class PageTooDeepError(InvalidQueryError):
    """offset + k beyond what the vector store answers per query (Milvus: 16,384 hits)."""

    code = "page_too_deep"


class TooManyNeighboursError(InvalidQueryError):
    """A duplicate scan met an image with more neighbours above the threshold than the vector
    store answers per query (Milvus: 16,384)."""

    code = "too_many_neighbours"


class TooManyPairsError(InvalidQueryError):
    """A duplicate scan found more similar pairs than it may hold (a threshold so low that most
    of the collection matches: its pairs would grow with the square of the collection)."""

    code = "too_many_pairs"
