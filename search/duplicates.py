"""Near-duplicate groups across a collection: which images are the same picture, and which to keep.

A scan reads the collection's vectors of one model from the catalog in batches and asks that
model's index for every vector within the cosine ``threshold`` of each (a FAISS range search, on
the exact index or on IVF with its tuned ``nprobe``; Milvus's own range search when Milvus holds
the vectors); the pairs found are joined into connected
groups by a union-find (``duplicate_groups``). Membership is transitive: two copies that each
match a third are in one group even when they score below the threshold with each other.

A ``DuplicateScan`` holds ids and scores only, so a large scan is small to keep (a background
job stores it); ``page`` adds the catalog's records to one page of groups and picks each group's
keeper by the ``prefer`` rule (``keepers``) from the images as they are then.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from vizdex.search.catalog import Catalog
from vizdex.search.duplicate_groups import (
    components_of,
    connected_components,
    representative,
    unique_pairs,
)
from vizdex.search.errors import InvalidQueryError, TooManyPairsError
from vizdex.search.index_store import RangeOutput
from vizdex.search.keepers import KeeperRule, choose_keeper
from vizdex.search.records import CollectionRecord, ImageFilter, ImageRecord

# Measured on the test suite's near-copy photo set (tests/support/near_copies.py): see README.
DUPLICATE_THRESHOLD = 0.9
QUERY_BATCH = 2048  # queries per range search: big enough for BLAS, small enough to cancel soon
# Hits one range search may return (12 bytes each in FAISS's answer): a low threshold makes every
# image a neighbour of every other, so a batch starts at what the collection's size allows in the
# worst case and grows (to QUERY_BATCH) only while its answers stay small.
BATCH_HITS = 4_000_000
READ_BATCH = 20_000  # vectors per catalog read

# The collection's model a scan uses, given the one asked for (``SearchService``'s image rule).
ModelFor = Callable[[CollectionRecord, str | None], str]


class RangeSource(Protocol):
    """What a scan asks of the vector store (``vector_store.VectorStore``): the local FAISS
    index's range search, or Milvus's own (``radius``) when Milvus holds the vectors."""

    def sync(self, collection: CollectionRecord) -> None: ...

    def range_search(
        self,
        collection: CollectionRecord,
        model: str,
        queries: np.ndarray,
        threshold: float,
        *,
        nprobe: int | None = None,
    ) -> RangeOutput: ...


Progress = Callable[[int, int], None]  # (vectors scanned, vectors to scan)


@dataclass(frozen=True)
class DuplicateOptions:
    """``threshold``: the cosine at or above which two images are copies, in [-1, 1].
    ``model``: one of the collection's models (default: its vision-only model, e.g. DINOv3,
    else its first). ``filters``: only images matching them are grouped. ``nprobe``: IVF lists
    probed per image (default: the index's tuned value)."""

    threshold: float = DUPLICATE_THRESHOLD
    model: str | None = None
    filters: ImageFilter | None = None
    nprobe: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and -1.0 <= self.threshold <= 1.0):
            raise InvalidQueryError(
                f"threshold must be a cosine similarity between -1 and 1, got {self.threshold}"
            )
        if self.nprobe is not None and self.nprobe < 1:
            raise InvalidQueryError(f"nprobe must be at least 1, got {self.nprobe}")


@dataclass(frozen=True)
class DuplicateGroup:
    """One group: its images, most typical first, each with its cosine to that one."""

    image_ids: tuple[int, ...]
    similarities: tuple[float, ...]

    @property
    def representative(self) -> int:
        return self.image_ids[0]

    @property
    def key(self) -> str:
        """Names this exact set of images (a reviewer's "seen it" mark is lost when it changes)."""
        members = ",".join(map(str, sorted(self.image_ids)))
        return hashlib.sha256(members.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DuplicateScan:
    """Every group of one scan, largest first (then by smallest image id)."""

    collection: str
    model: str
    threshold: float
    approximate: bool  # an IVF index answered: a few pairs may be missed
    nprobe: int  # IVF lists probed per image; 0 on an exact index
    scanned: int  # images whose vectors were looked at
    pairs: int  # distinct pairs at or above the threshold
    groups: list[DuplicateGroup] = field(default_factory=list)

    @property
    def images(self) -> int:
        """Images that are in some group."""
        return sum(len(group.image_ids) for group in self.groups)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DuplicateScan:
        groups = [
            DuplicateGroup(tuple(map(int, g["image_ids"])), tuple(map(float, g["similarities"])))
            for g in data["groups"]
        ]
        fields = {k: v for k, v in data.items() if k != "groups"}
        return cls(**fields, groups=groups)


@dataclass(frozen=True)
class GroupMember:
    image: ImageRecord
    similarity: float  # cosine to the group's representative
    keeper: bool
    representative: bool


@dataclass(frozen=True)
class GroupView:
    key: str
    keeper_id: int
    representative_id: int
    members: list[GroupMember]


@dataclass(frozen=True)
class DuplicatePage:
    scan: DuplicateScan
    prefer: KeeperRule
    offset: int
    limit: int
    groups: list[GroupView]


@dataclass(frozen=True)
class SimilarPairs:
    """A scan's pairs before grouping: ``low[i]``–``high[i]``, the smaller image id first."""

    collection: CollectionRecord
    model: str
    low: np.ndarray
    high: np.ndarray
    scanned: int
    approximate: bool
    nprobe: int


class DuplicateFinder:
    """Scans a collection for near-duplicate groups and shows pages of them."""

    def __init__(
        self, catalog: Catalog, store: RangeSource, model_for: ModelFor, *, max_pairs: int
    ) -> None:
        self._catalog = catalog
        self._store = store
        self._model_for = model_for
        self._max_pairs = max_pairs  # distinct pairs a scan may hold before it is refused

    def size(self, collection: str, options: DuplicateOptions) -> int:
        """How many vectors a scan would read (cheap: decides between answering and a job)."""
        record = self._catalog.get_collection(collection)
        model = self._model_for(record, options.model)
        return self._catalog.embedding_summary(record.id, model)[1]

    def scan(
        self,
        collection: str,
        options: DuplicateOptions,
        *,
        progress: Progress | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> DuplicateScan:
        """Every group of the collection (``cancelled`` is asked between batches; when it says
        yes the scan stops and returns the groups found so far)."""
        found = self.pairs(collection, options, progress=progress, cancelled=cancelled)
        return DuplicateScan(
            collection=found.collection.name,
            model=found.model,
            threshold=options.threshold,
            approximate=found.approximate,
            nprobe=found.nprobe,
            scanned=found.scanned,
            pairs=len(found.low),
            groups=self._groups(found),
        )

    def pairs(
        self,
        collection: str,
        options: DuplicateOptions,
        *,
        progress: Progress | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> SimilarPairs:
        """Every distinct pair of images at or above the threshold (what ``scan`` groups)."""
        record = self._catalog.get_collection(collection)
        model = self._model_for(record, options.model)
        allowed = self._allowed(record, options.filters)
        self._store.sync(record)
        upto = self._catalog.collection_seq(record.id)
        population = self.size(collection, options)  # the most hits one query can have
        total = len(allowed) if allowed is not None else population
        found = _PairSet(self._max_pairs)
        scanned, approximate, nprobe = 0, False, 0
        size = max(1, min(QUERY_BATCH, BATCH_HITS // max(population, 1)))
        if progress is not None:
            progress(0, total)
        batches = self._catalog.iter_embeddings(
            record.id, model, upto_seq=upto, batch_size=READ_BATCH
        )
        stopped = False
        for ids, vectors in batches:
            if allowed is not None:
                keep = np.isin(ids, allowed)
                ids, vectors = ids[keep], vectors[keep]
            start = 0
            while start < len(ids):
                stopped = cancelled is not None and cancelled()
                if stopped:
                    break
                part = slice(start, start + size)
                queries = _unit_rows(vectors[part])
                out = self._store.range_search(
                    record, model, queries, options.threshold, nprobe=options.nprobe
                )
                approximate, nprobe = out.approximate, out.nprobe
                left = np.repeat(ids[part], np.diff(out.lims))
                right = out.ids
                keep = right >= 0
                if allowed is not None:
                    keep &= np.isin(right, allowed)
                if not found.add(*unique_pairs(left[keep], right[keep])):
                    raise TooManyPairsError(
                        f"at threshold {options.threshold:g} collection {record.name!r} has more "
                        f"than {self._max_pairs:,} pairs of similar images (found after "
                        f"{scanned + len(queries):,} of {total:,} images): raise the threshold or "
                        "narrow the scan with a filter",
                        threshold=options.threshold,
                        max_pairs=self._max_pairs,
                    )
                start += len(queries)
                scanned += len(queries)
                size = _next_batch(size, len(out.ids))
                if progress is not None:
                    progress(scanned, total)
            if stopped:
                break
        low, high = found.pairs()
        return SimilarPairs(record, model, low, high, scanned, approximate, nprobe)

    def page(
        self,
        scan: DuplicateScan,
        *,
        offset: int = 0,
        limit: int = 50,
        prefer: KeeperRule = KeeperRule.PIXELS,
    ) -> DuplicatePage:
        """Groups ``[offset, offset + limit)`` with their images' records and keepers.

        Images deleted since the scan are left out of their group, and a group left with fewer
        than two is left out of the page (its place in the numbering stays).
        """
        if offset < 0 or limit < 1:
            raise InvalidQueryError("offset must be >= 0 and limit >= 1")
        record = self._catalog.get_collection(scan.collection)
        chosen = scan.groups[offset : offset + limit]
        records = self._catalog.get_images(
            record.id, [image_id for group in chosen for image_id in group.image_ids]
        )
        views = []
        for group in chosen:
            present = [
                (records[image_id], similarity)
                for image_id, similarity in zip(group.image_ids, group.similarities, strict=True)
                if image_id in records
            ]
            if len(present) < 2:
                continue
            keeper = choose_keeper(
                [image for image, _ in present], prefer, representative=group.representative
            )
            members = [
                GroupMember(
                    image=image,
                    similarity=similarity,
                    keeper=image.id == keeper,
                    representative=image.id == group.representative,
                )
                for image, similarity in present
            ]
            members.sort(key=lambda member: not member.keeper)  # the keeper first, then by score
            views.append(GroupView(group.key, keeper, group.representative, members))
        return DuplicatePage(scan, KeeperRule(prefer), offset, limit, views)

    # -- parts ---------------------------------------------------------------------------------

    def _allowed(self, record: CollectionRecord, filters: ImageFilter | None) -> np.ndarray | None:
        if filters is None or not filters.active:
            return None
        ids = self._catalog.filter_image_ids(record.id, filters)
        return np.asarray(sorted(ids), dtype=np.int64)

    def _groups(self, found: SimilarPairs) -> list[DuplicateGroup]:
        record, model, low, high = found.collection, found.model, found.low, found.high
        if not len(low):
            return []
        nodes = np.unique(np.concatenate([low, high]))
        labels = connected_components(
            len(nodes), np.searchsorted(nodes, low), np.searchsorted(nodes, high)
        )
        ids, vectors = self._catalog.get_vectors(record.id, model, nodes.tolist())
        # An image deleted during the scan has no vector any more: it leaves its group.
        where = {int(image_id): row for row, image_id in enumerate(ids)}
        groups: list[DuplicateGroup] = []
        for positions in components_of(labels):
            members = [int(nodes[p]) for p in positions if int(nodes[p]) in where]
            if len(members) < 2:
                continue
            rows = _unit_rows(vectors[[where[m] for m in members]])
            best, similarities = representative(rows)
            order = sorted(range(len(members)), key=lambda i: (i != best, -similarities[i]))
            groups.append(
                DuplicateGroup(
                    tuple(members[i] for i in order),
                    tuple(round(float(similarities[i]), 6) for i in order),
                )
            )
        groups.sort(key=lambda group: (-len(group.image_ids), min(group.image_ids)))
        return groups


class _PairSet:
    """The distinct pairs found so far. New ones are merged in (sorted, repeats dropped) each time
    they pass half the limit, so at most 1.5x ``limit`` pairs are held; as every pair is found at
    most twice (once from each side), a scan within the limit merges a handful of times."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._low: list[np.ndarray] = []
        self._high: list[np.ndarray] = []
        self._new = 0

    def add(self, low: np.ndarray, high: np.ndarray) -> bool:
        """Hold these pairs too; False once more than ``limit`` distinct ones are known."""
        self._low.append(low)
        self._high.append(high)
        self._new += len(low)
        return self._new <= max(self._limit // 2, 1) or len(self._merge()[0]) <= self._limit

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        return self._merge()

    def _merge(self) -> tuple[np.ndarray, np.ndarray]:
        empty = np.zeros(0, np.int64)
        low, high = unique_pairs(
            np.concatenate(self._low) if self._low else empty,
            np.concatenate(self._high) if self._high else empty,
        )
        self._low, self._high, self._new = [low], [high], 0
        return low, high


def _next_batch(size: int, hits: int) -> int:
    """The next range search's queries: double while answers stay well within ``BATCH_HITS``,
    halve when one went beyond it."""
    if hits > BATCH_HITS:
        return max(1, size // 2)
    if hits <= BATCH_HITS // 4:
        return min(QUERY_BATCH, size * 2)
    return size


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (stored vectors are already; this keeps "cosine" honest)."""
    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.ascontiguousarray(matrix / np.where(norms > 0, norms, 1.0))


__all__ = [
    "DUPLICATE_THRESHOLD",
    "DuplicateFinder",
    "DuplicateGroup",
    "DuplicateOptions",
    "DuplicatePage",
    "DuplicateScan",
    "GroupMember",
    "GroupView",
    "SimilarPairs",
]
