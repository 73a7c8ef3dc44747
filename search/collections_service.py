"""What callers above ``search`` read about collections: counts, index details, image pages.

``SearchService`` answers queries and owns the writes; the HTTP routes (and the app's metrics and
readiness probe) also need plain reads that today only the catalog and the index store answer.
Rather than let each route reach through ``SearchService.catalog`` / ``.indexes`` (and so depend
on the catalog's shape and on SQLAlchemy), they ask this service, which wraps one open
``SearchService`` and is cheap to make per request. It is read-only: anything that changes a
collection goes through ``SearchService`` (or the indexer), which keeps the indexes in step.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import text

from vizdex.search.db import sqlite_file
from vizdex.search.index_store import IndexInfo
from vizdex.search.records import CollectionRecord, ImageRecord
from vizdex.search.service import SearchService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectionSummary:
    """A collection with its image count; ``index_details`` (one per model) and ``vectors`` (per
    model: how many images it covers) only when asked for."""

    record: CollectionRecord
    image_count: int
    index_details: tuple[IndexInfo, ...] | None = None
    vectors: Mapping[str, int] | None = None
    answering: Mapping[str, str | None] | None = None  # "text"/"image" -> the model that answers


class CollectionsService:
    def __init__(self, search: SearchService) -> None:
        self._search = search

    def summaries(self) -> list[CollectionSummary]:
        catalog = self._search.catalog
        return [
            CollectionSummary(record, catalog.count_images(record.id))
            for record in self._search.list_collections()
        ]

    def describe(self, name: str) -> CollectionSummary:
        """One collection with its image count and each model's index (kind, vectors, dims)."""
        record = self._search.get_collection(name)
        count = self._search.catalog.count_images(record.id)
        store = self._search.store  # FAISS or Milvus: whichever answers the searches
        return CollectionSummary(
            record,
            count,
            tuple(store.info(record, model) for model in record.models),
            self._search.catalog.model_coverage(record.id),
            self._search.answering_models(record),
        )

    def image_counts(self) -> dict[str, int]:
        """Images per collection name (for the metrics gauge)."""
        return {summary.record.name: summary.image_count for summary in self.summaries()}

    def list_images(self, collection: str, *, after_id: int, limit: int) -> list[ImageRecord]:
        """Images in id order after ``after_id``: keyset pages of at most ``limit``."""
        catalog = self._search.catalog
        record = catalog.get_collection(collection)
        return catalog.list_images(record.id, after_id=after_id, limit=limit)

    def get_image(self, collection: str, image_id: int) -> ImageRecord:
        catalog = self._search.catalog
        return catalog.get_image(catalog.get_collection(collection).id, image_id)

    def database_reachable(self) -> bool:
        """Whether the catalog's database answers a trivial query (for the readiness probe)."""
        engine = self._search.catalog.engine
        path = sqlite_file(engine.url)
        # A pooled SQLite connection answers SELECT 1 from its open file even after the file is
        # deleted or moved, and writes would then go to a file no one will read again.
        if path is not None and not path.is_file():
            log.warning("readiness: the catalog database %s is gone", path)
            return False
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception:
            log.warning("readiness: the catalog database is unreachable", exc_info=True)
            return False
        return True
