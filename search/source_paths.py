"""Catalog access by source path, for incremental ingestion: the catalog's methods, as functions.

The work (and the one write path it goes through) is ``Catalog``'s; these keep the indexer's
calls as they were.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from vizdex.search.catalog import Catalog
from vizdex.search.records import SourceRow, SourceUpdate


def images_at_sources(
    catalog: Catalog, collection_id: int, uris: Sequence[str]
) -> dict[str, list[SourceRow]]:
    """Images recorded at each of ``uris`` (usually one each), in id order."""
    return catalog.images_at_sources(collection_id, uris)


def iter_sha256(catalog: Catalog, collection_id: int, *, page: int = 20_000) -> Iterator[str]:
    """Every sha256 in the collection, paged by id (short reads, bounded memory)."""
    return catalog.iter_sha256(collection_id, page=page)


def update_sources(catalog: Catalog, collection_id: int, updates: Sequence[SourceUpdate]) -> int:
    """Record new paths (moves) or new size/mtime (touched files), in one transaction."""
    return catalog.update_sources(collection_id, updates)


__all__ = ["SourceRow", "SourceUpdate", "images_at_sources", "iter_sha256", "update_sources"]
