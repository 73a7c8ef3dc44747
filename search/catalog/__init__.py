"""The catalog: collections, images, their vectors and ingestion jobs, in one SQL database.

It is the source of truth; vector indexes are caches rebuilt and replayed from it. Every method is
one transaction, and returns only after it committed.

One room per concern, each a part of ``Catalog``:

- ``session``: the engine, the one read path and the one write path (``_write``: SQLite
  ``BEGIN IMMEDIATE``), the collection-row lock and sequence-number allocation;
- ``collections``: create, find, list, delete; a collection's counter and image count;
- ``images``: add (with vectors), delete, retag, find, and source paths (moves, touched files);
- ``vectors``: vectors and tombstones by sequence number, what indexes replay;
- ``jobs``: ingestion jobs;
- ``queue``: the work queue: jobs in chunks that workers claim under a lease;
- ``positions``: how far external vector stores (Milvus) have applied the change feed;
- ``rows``: rows to records and back, built from the records' fields.

The parts are mixins over ``CatalogSession`` rather than objects a facade delegates to: every
method keeps its name on ``Catalog`` without a second signature to keep in step, and no part can
open a transaction except through the session's two paths.
"""

from __future__ import annotations

from vizdex.search.catalog.collections import COLLECTION_NAME, CollectionsPart
from vizdex.search.catalog.images import ImagesPart
from vizdex.search.catalog.jobs import MAX_JOB_FAILURES, JobsPart
from vizdex.search.catalog.positions import PositionsPart, StorePosition
from vizdex.search.catalog.queue import ClaimedItem, QueuePart
from vizdex.search.catalog.session import CHUNK, CatalogSession
from vizdex.search.catalog.vectors import VectorsPart


class Catalog(CollectionsPart, ImagesPart, VectorsPart, JobsPart, QueuePart, PositionsPart):
    """Typed access to the catalog database; safe to share between threads."""


__all__ = [
    "CHUNK",
    "COLLECTION_NAME",
    "MAX_JOB_FAILURES",
    "Catalog",
    "CatalogSession",
    "ClaimedItem",
    "StorePosition",
]
