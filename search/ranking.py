"""Ranked, filtered pages of hits, for one model or fused over several.

``Ranker`` turns one model's ranked hits (from whichever vector store answers) into pages and
fuses several models' lists. ``IndexRanking`` is how the local FAISS indexes rank: filtered
searches first over-fetch from the index and filter in SQL; if a filter is so selective that this
does not fill the page, the matching ids come from SQL and only they are searched. Both are exact
on a flat index, because each ends with every candidate seen or with the page filled from a ranked
list.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from vizdex.search.catalog import Catalog
from vizdex.search.errors import InvalidQueryError
from vizdex.search.fusion import reciprocal_rank_fusion
from vizdex.search.index_store import IndexStore
from vizdex.search.queries import Ranked, SearchHit, SearchOptions, SearchResult
from vizdex.search.records import CollectionRecord, ImageRecord
from vizdex.search.settings import QuerySettings


class RankSource(Protocol):
    """Where one model's ranked hits come from: a vector store."""

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
    ) -> Ranked: ...


def unit(vector: np.ndarray, *, what: str) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    if array.size == 0 or not np.isfinite(array).all():
        raise InvalidQueryError(f"{what} must be a non-empty vector of finite numbers")
    norm = float(np.linalg.norm(array))
    if norm == 0.0:
        raise InvalidQueryError(f"{what} must not be all zeros")
    return array / norm


class Ranker:
    """Turns query vectors into pages of hits, from one model's ranking or several fused."""

    def __init__(self, source: RankSource, settings: QuerySettings) -> None:
        self._source = source
        self._settings = settings

    def single(
        self,
        collection: CollectionRecord,
        model: str,
        vector: np.ndarray,
        options: SearchOptions,
        *,
        exclude: frozenset[int],
    ) -> SearchResult:
        query = unit(vector, what="query")
        ranked = self._source.rank(
            collection, model, query, options.k, options, exclude, skip=options.offset
        )
        page = ranked.hits[: options.k]
        hits = [
            SearchHit(
                image_id=image_id,
                score=score,
                model=model,
                image=ranked.images[image_id],
                scores={model: score},
            )
            for image_id, score in page
        ]
        return SearchResult(
            collection=collection.name,
            model=model,
            hits=hits,
            k=options.k,
            offset=options.offset,
            approximate=ranked.approximate,
        )

    def fused(
        self,
        collection: CollectionRecord,
        queries: Mapping[str, np.ndarray],
        options: SearchOptions,
        *,
        exclude: frozenset[int],
    ) -> SearchResult:
        need = options.offset + options.k
        depth = max(need, self._settings.rrf_depth)
        ranked = {
            name: self._source.rank(
                collection, name, unit(vector, what="query"), depth, options, exclude
            )
            for name, vector in queries.items()
        }
        fused = reciprocal_rank_fusion(
            {name: [image_id for image_id, _ in r.hits] for name, r in ranked.items()},
            k=self._settings.rrf_k,
        )
        cosine = {name: dict(r.hits) for name, r in ranked.items()}
        images: dict[int, ImageRecord] = {}
        for r in ranked.values():
            images.update(r.images)
        label = "+".join(queries)
        hits = [
            SearchHit(
                image_id=image_id,
                score=score,
                model=label,
                image=images[image_id],
                scores={name: c[image_id] for name, c in cosine.items() if image_id in c},
            )
            for image_id, score in fused[options.offset : need]
        ]
        return SearchResult(
            collection=collection.name,
            model=label,
            hits=hits,
            k=options.k,
            offset=options.offset,
            approximate=any(r.approximate for r in ranked.values()),
            fused=True,
        )


class IndexRanking:
    """Ranks with the local FAISS indexes, filtering their candidates with the catalog's rows."""

    def __init__(self, catalog: Catalog, indexes: IndexStore, settings: QuerySettings) -> None:
        self._catalog = catalog
        self._indexes = indexes
        self._settings = settings

    def rank(
        self,
        collection: CollectionRecord,
        model: str,
        query: np.ndarray,
        need: int,
        options: SearchOptions,
        exclude: frozenset[int],
    ) -> Ranked:
        """The best ``need`` hits of one model that pass the filters, exclusions and min_score."""
        filters = options.active_filters
        images: dict[int, ImageRecord] = {}
        fetch = need + len(exclude) if filters is None else max(4 * need, 64) + len(exclude)
        exhaustive = False
        prefiltered = False
        allowed: np.ndarray | None = None
        matrix = query[None, :]
        while True:
            out = self._indexes.search(
                collection, model, matrix, fetch, allowed_ids=allowed, exhaustive=exhaustive
            )
            candidates = [
                (int(i), float(s))
                for i, s in zip(out.ids[0], out.scores[0], strict=True)
                if i >= 0 and int(i) not in exclude
            ]
            returned = int((out.ids[0] >= 0).sum())
            hits, below_cutoff = self._accept(collection, candidates, need, options, images)
            if len(hits) >= need or below_cutoff or prefiltered:
                break
            if returned >= out.count:  # every vector of the index has been looked at
                break
            if returned < fetch and out.approximate and not exhaustive:
                exhaustive = True  # IVF ran out of probed lists: probe them all
                continue
            if filters is not None and not prefiltered:
                # A selective filter: search only the ids SQL says match (exact on flat/IVF-Flat).
                limit = self._settings.prefilter_max
                matching = self._catalog.filter_image_ids(collection.id, filters, limit=limit + 1)
                if len(matching) <= limit:
                    prefiltered = True
                    allowed = np.asarray([i for i in matching if i not in exclude], np.int64)
                    if len(allowed) == 0:
                        hits = []
                        break
                    fetch, exhaustive = len(allowed), True
                    continue
            fetch = min(fetch * 4, out.count + len(exclude))
        return Ranked(hits=hits, images=images, approximate=out.approximate)

    def _accept(
        self,
        collection: CollectionRecord,
        candidates: list[tuple[int, float]],
        need: int,
        options: SearchOptions,
        images: dict[int, ImageRecord],
    ) -> tuple[list[tuple[int, float]], bool]:
        """Walks ranked candidates, fetching their rows in chunks, until ``need`` pass.

        Returns (hits, whether the min_score cut-off was reached). Ids without a row (deleted in
        the catalog a moment ago) are dropped, so a deleted image is never returned.
        """
        filters = options.active_filters
        hits: list[tuple[int, float]] = []
        chunk = max(2 * need, 100)
        for start in range(0, len(candidates), chunk):
            part = candidates[start : start + chunk]
            missing = [image_id for image_id, _ in part if image_id not in images]
            images.update(self._catalog.get_images(collection.id, missing))
            for image_id, score in part:
                if options.min_score is not None and score < options.min_score:
                    return hits, True
                image = images.get(image_id)
                if image is None or (filters is not None and not filters.matches(image)):
                    continue
                hits.append((image_id, score))
                if len(hits) >= need:
                    return hits, False
        return hits, False
