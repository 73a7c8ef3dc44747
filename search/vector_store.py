"""The vector-store seam: what the query service asks of whichever engine holds the vectors.

Two stores implement it. ``FaissVectorStore`` (the default) keeps one local FAISS index per
collection and model (``index_store``) and filters in SQL. ``MilvusVectorStore``
(``milvus_store``, imported only when chosen, so the embedded profile needs no ``pymilvus``) hands
the vectors to Milvus and pushes filters down. ``VIZDEX_VECTOR_STORE`` picks one: ``faiss``,
``milvus://host:19530`` (or ``http(s)://``), or a milvus-lite file path ending in ``.db``.
Both follow the catalog's change feed by sequence number; the catalog stays the source of truth.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import numpy as np

from vizdex.core.errors import InvalidInputError
from vizdex.search.catalog import Catalog
from vizdex.search.index_store import IndexInfo, IndexStore, RangeOutput
from vizdex.search.queries import Ranked, SearchOptions
from vizdex.search.ranking import IndexRanking
from vizdex.search.records import CollectionRecord
from vizdex.search.settings import IndexSettings, QuerySettings

if TYPE_CHECKING:
    from vizdex.search.milvus_store import MilvusVectorStore

FAISS = "faiss"
MILVUS_SCHEMES = ("milvus://", "http://", "https://")
# A host name or an IP address (IPv6 without its brackets, as urlsplit gives it).
HOST = re.compile(r"[a-z0-9._-]+|[0-9a-f:.]+")


class VectorStore(Protocol):
    """What the service calls; every method takes the catalog's records, never ORM rows."""

    @property
    def name(self) -> str: ...

    def rank(
        self,
        collection: CollectionRecord,
        model: str,
        query: np.ndarray,
        need: int,
        options: SearchOptions,
        exclude: frozenset[int],
        *,
        skip: int = 0,
    ) -> Ranked:
        """The best ``need`` hits after the first ``skip`` (after ``exclude``, filters and
        min_score), best first: a page, its offset pushed down where the store can."""
        ...

    def range_search(
        self,
        collection: CollectionRecord,
        model: str,
        queries: np.ndarray,
        threshold: float,
        *,
        nprobe: int | None = None,
    ) -> RangeOutput:
        """Every vector scoring at least ``threshold`` with each query (duplicate scans)."""
        ...

    def open_collection(self, collection: CollectionRecord) -> None:
        """Gets the collection's vectors ready to search (load, or build from the catalog)."""
        ...

    def sync(self, collection: CollectionRecord) -> None:
        """Applies the catalog's changes up to now (after a write in this process)."""
        ...

    def reach(self, collection: CollectionRecord, min_seq: int, timeout_s: float) -> bool:
        """Whether the store holds sequence number ``min_seq`` within ``timeout_s``."""
        ...

    def applied_seqs(self) -> dict[int, int]:
        """Per collection the store has state for, the sequence number it has applied."""
        ...

    def dim(self, collection: CollectionRecord, model: str) -> int | None: ...

    def info(self, collection: CollectionRecord, model: str) -> IndexInfo:
        """What answers the model's searches: kind, vectors, dimensions, position."""
        ...

    def drop_collection(self, collection_id: int) -> None: ...

    def drop_model(self, collection_id: int, model: str) -> None:
        """Drops what the store holds for a model removed from the collection."""
        ...

    def start_following(self, interval_s: float) -> None:
        """Follows the change feed every ``interval_s`` in the background, until ``close``."""
        ...

    def close(self) -> None: ...


class FaissVectorStore:
    """The local FAISS indexes (``IndexStore``) behind the seam: default, unchanged behaviour."""

    def __init__(self, catalog: Catalog, indexes: IndexStore, settings: QuerySettings) -> None:
        self._indexes = indexes
        self._ranking = IndexRanking(catalog, indexes, settings)

    @property
    def name(self) -> str:
        return FAISS

    def rank(
        self,
        collection: CollectionRecord,
        model: str,
        query: np.ndarray,
        need: int,
        options: SearchOptions,
        exclude: frozenset[int],
        *,
        skip: int = 0,
    ) -> Ranked:
        """FAISS has no offset: the first ``skip + need`` hits, less the first ``skip``."""
        ranked = self._ranking.rank(collection, model, query, skip + need, options, exclude)
        return Ranked(hits=ranked.hits[skip:], images=ranked.images, approximate=ranked.approximate)

    def range_search(
        self,
        collection: CollectionRecord,
        model: str,
        queries: np.ndarray,
        threshold: float,
        *,
        nprobe: int | None = None,
    ) -> RangeOutput:
        return self._indexes.range_search(collection, model, queries, threshold, nprobe=nprobe)

    def open_collection(self, collection: CollectionRecord) -> None:
        self._indexes.open_collection(collection)

    def sync(self, collection: CollectionRecord) -> None:
        self._indexes.sync(collection)

    def reach(self, collection: CollectionRecord, min_seq: int, timeout_s: float) -> bool:
        return self._indexes.reach(collection, min_seq, timeout_s)

    def applied_seqs(self) -> dict[int, int]:
        return self._indexes.applied_seqs()

    def dim(self, collection: CollectionRecord, model: str) -> int | None:
        return self._indexes.dim(collection, model)

    def info(self, collection: CollectionRecord, model: str) -> IndexInfo:
        return self._indexes.info(collection, model)

    def drop_collection(self, collection_id: int) -> None:
        self._indexes.drop_collection(collection_id)

    def drop_model(self, collection_id: int, model: str) -> None:
        self._indexes.drop_model(collection_id, model)

    def start_following(self, interval_s: float) -> None:
        self._indexes.start_following(interval_s)

    def close(self) -> None:
        """The service closes the ``IndexStore`` itself (it owns it with either store)."""


def is_milvus(spec: str) -> bool:
    """``VIZDEX_VECTOR_STORE`` names Milvus: a server URI or a milvus-lite ``.db`` file."""
    value = spec.strip()
    return value.startswith(MILVUS_SCHEMES) or value.endswith(".db")


def check_vector_store(spec: str) -> None:
    if spec.strip().lower() != FAISS and not is_milvus(spec):
        raise InvalidInputError(
            f"VIZDEX_VECTOR_STORE={spec!r} is not a vector store: use 'faiss', "
            "'milvus://host:19530' or a milvus-lite file path ending in '.db'"
        )
    if spec.strip().startswith(MILVUS_SCHEMES):
        # No host would mean pymilvus's default, localhost:19530: maybe another catalog's
        # Milvus, whose collections under the same prefix the follower would then prune.
        try:
            parts = urlsplit(spec.strip())
            host, port = parts.hostname, parts.port  # port: ValueError unless 0-65535
        except ValueError as error:
            raise InvalidInputError(f"VIZDEX_VECTOR_STORE={spec!r}: {error}") from None
        if not host or not HOST.fullmatch(host) or port == 0:
            raise InvalidInputError(
                f"VIZDEX_VECTOR_STORE={spec!r} names no usable Milvus host and port: use "
                "'milvus://host:19530'"
            )


def open_milvus(catalog: Catalog, settings: IndexSettings) -> MilvusVectorStore:
    """The Milvus store named by ``settings.vector_store`` (imports pymilvus only now)."""
    try:
        from vizdex.search.milvus_store import MilvusVectorStore
    except ImportError as error:  # pymilvus missing: say which extra brings it
        raise InvalidInputError(
            f"VIZDEX_VECTOR_STORE={settings.vector_store!r} needs pymilvus: install vizdex with "
            f"the 'milvus' extra (or 'milvus-lite' for a local file) ({error})"
        ) from None
    return MilvusVectorStore.open(catalog, settings)


def open_vector_store(
    catalog: Catalog, indexes: IndexStore, settings: IndexSettings, query: QuerySettings
) -> VectorStore:
    """The store ``settings.vector_store`` names (``faiss`` unless it names Milvus)."""
    check_vector_store(settings.vector_store)
    if is_milvus(settings.vector_store):
        return open_milvus(catalog, settings)
    return FaissVectorStore(catalog, indexes, query)
