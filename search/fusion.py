"""Reciprocal rank fusion: merge rankings from different models without comparing their scores.

Cosine scores of CLIP and DINOv3 live on different scales, so only ranks are combined:
``score(d) = Σ_models 1 / (k + rank_model(d))`` (Cormack et al., 2009; k = 60 by default).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

DEFAULT_RRF_K = 60


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[int]] | Iterable[Sequence[int]], *, k: int = DEFAULT_RRF_K
) -> list[tuple[int, float]]:
    """(id, fused score) best first; ties broken by id so results are deterministic."""
    lists = rankings.values() if isinstance(rankings, Mapping) else rankings
    fused: dict[int, float] = {}
    for ranking in lists:
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda pair: (-pair[1], pair[0]))
