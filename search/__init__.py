"""Search: the catalog (source of truth), FAISS vector indexes kept in step with it, and queries."""

from search.catalog import Catalog
from search.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    ImageNotFoundError,
    IndexCorruptError,
    InvalidQueryError,
    JobNotFoundError,
    ModelNotLoadedError,
    SchemaMismatchError,
    SchemaOutOfDateError,
)
from search.fusion import reciprocal_rank_fusion
from search.index import IndexBackend, IndexPolicy, VectorIndex, gpu_available
from search.index_file import fsync_directory
from search.index_store import IndexInfo, IndexStore
from search.records import (
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
)
from search.schema import SchemaState, SchemaStatus, ensure_schema, schema_status, upgrade
from search.service import (
    SearchHit,
    SearchOptions,
    SearchResult,
    SearchService,
    SimilarityMatrix,
    TextMatch,
)
from search.settings import MAX_K, CatalogSettings, IndexSettings, QuerySettings, SearchSettings
from search.source_paths import (
    SourceRow,
    SourceUpdate,
    images_at_sources,
    iter_sha256,
    update_sources,
)

__all__ = [
    "MAX_K",
    "AddedImage",
    "Catalog",
    "CatalogSettings",
    "CollectionExistsError",
    "CollectionNotFoundError",
    "CollectionRecord",
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
    "ModelNotLoadedError",
    "NewImage",
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
    "ensure_schema",
    "fsync_directory",
    "gpu_available",
    "images_at_sources",
    "iter_sha256",
    "reciprocal_rank_fusion",
    "schema_status",
    "update_sources",
    "upgrade",
]
