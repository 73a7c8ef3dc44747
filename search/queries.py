"""What a search takes and gives back: plain values for the service, the web app and the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from vizdex.search.records import ImageFilter, ImageRecord


@dataclass(frozen=True)
class SearchOptions:
    """``k`` results after skipping ``offset``; ``min_score`` is a cosine cut-off per model."""

    k: int = 10
    offset: int = 0
    min_score: float | None = None
    filters: ImageFilter | None = None

    @property
    def active_filters(self) -> ImageFilter | None:
        """The filters when they restrict anything, else None (an empty filter is no filter)."""
        return self.filters if self.filters is not None and self.filters.active else None


@dataclass(frozen=True)
class SearchHit:
    image_id: int
    score: float  # cosine similarity, or the RRF score when fused
    model: str
    image: ImageRecord
    scores: Mapping[str, float] = field(default_factory=dict)  # cosine per model that found it


@dataclass(frozen=True)
class SearchResult:
    collection: str
    model: str  # "a+b" when several models were fused
    hits: list[SearchHit]
    k: int
    offset: int
    approximate: bool  # an IVF index answered: results may miss some true neighbours
    fused: bool = False


@dataclass
class Ranked:
    """One model's ranked, filtered hits for one query, best first, with their catalog rows:
    what a vector store answers (``vector_store.VectorStore.rank``)."""

    hits: list[tuple[int, float]]  # (image id, cosine similarity)
    images: dict[int, ImageRecord]
    approximate: bool


@dataclass(frozen=True)
class SimilarityMatrix:
    model: str
    scores: np.ndarray  # [n, n] cosine similarity


@dataclass(frozen=True)
class TextMatch:
    model: str
    scores: np.ndarray  # [images, texts] cosine similarity
    probabilities: np.ndarray  # [images, texts], each row sums to 1
    logit_scale: float
