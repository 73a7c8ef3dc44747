"""Search: the catalog (source of truth), FAISS vector indexes kept in step with it, and queries."""

from vizdex.search.catalog import Catalog, ClaimedItem
from vizdex.search.collections_service import CollectionsService, CollectionSummary
from vizdex.search.db import unavailable_database
from vizdex.search.duplicates import (
    DUPLICATE_THRESHOLD,
    DuplicateFinder,
    DuplicateGroup,
    DuplicateOptions,
    DuplicatePage,
    DuplicateScan,
    GroupMember,
    GroupView,
)
from vizdex.search.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    ImageNotFoundError,
    IndexCorruptError,
    InvalidQueryError,
    JobNotFoundError,
    ModelNotLoadedError,
    NotCaughtUpError,
    PrecisionMismatchError,
    SchemaMismatchError,
    SchemaOutOfDateError,
)
from vizdex.search.fusion import reciprocal_rank_fusion
from vizdex.search.index import IndexBackend, IndexPolicy, VectorIndex, gpu_available
from vizdex.search.index_file import fsync_directory, move_aside
from vizdex.search.index_store import IndexInfo, IndexStore
from vizdex.search.keepers import KEEPER_RULES, KeeperRule
from vizdex.search.model_choice import ModelUse, choose_model
from vizdex.search.queries import (
    SearchHit,
    SearchOptions,
    SearchResult,
    SimilarityMatrix,
    TextMatch,
)
from vizdex.search.records import (
    AddedImage,
    CollectionRecord,
    ImageFilter,
    ImageRecord,
    ImageStatus,
    JobFailure,
    JobRecord,
    JobState,
    NewImage,
    SourceKind,
    SourceRow,
    SourceUpdate,
)
from vizdex.search.schema import SchemaState, SchemaStatus, ensure_schema, schema_status, upgrade
from vizdex.search.service import SearchService
from vizdex.search.settings import (
    MAX_K,
    CatalogSettings,
    IndexSettings,
    QuerySettings,
    SearchSettings,
)
from vizdex.search.source_paths import images_at_sources, iter_sha256, update_sources

__all__ = [
    "DUPLICATE_THRESHOLD",
    "KEEPER_RULES",
    "MAX_K",
    "AddedImage",
    "Catalog",
    "CatalogSettings",
    "ClaimedItem",
    "CollectionExistsError",
    "CollectionNotFoundError",
    "CollectionRecord",
    "CollectionSummary",
    "CollectionsService",
    "DuplicateFinder",
    "DuplicateGroup",
    "DuplicateOptions",
    "DuplicatePage",
    "DuplicateScan",
    "GroupMember",
    "GroupView",
    "ImageFilter",
    "ImageNotFoundError",
    "ImageRecord",
    "ImageStatus",
    "IndexBackend",
    "IndexCorruptError",
    "IndexInfo",
    "IndexPolicy",
    "IndexSettings",
    "IndexStore",
    "InvalidQueryError",
    "JobFailure",
    "JobNotFoundError",
    "JobRecord",
    "JobState",
    "KeeperRule",
    "ModelNotLoadedError",
    "ModelUse",
    "NewImage",
    "NotCaughtUpError",
    "PrecisionMismatchError",
    "QuerySettings",
    "SchemaMismatchError",
    "SchemaOutOfDateError",
    "SchemaState",
    "SchemaStatus",
    "SearchHit",
    "SearchOptions",
    "SearchResult",
    "SearchService",
    "SearchSettings",
    "SimilarityMatrix",
    "SourceKind",
    "SourceRow",
    "SourceUpdate",
    "TextMatch",
    "VectorIndex",
    "choose_model",
    "ensure_schema",
    "fsync_directory",
    "gpu_available",
    "images_at_sources",
    "iter_sha256",
    "move_aside",
    "reciprocal_rank_fusion",
    "schema_status",
    "unavailable_database",
    "update_sources",
    "upgrade",
]
