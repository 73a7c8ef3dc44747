"""Near-duplicate groups from similar pairs: connected components, and a representative each.

Plain numpy over positions, no catalog and no index: ``duplicates`` feeds it the pairs a range
search found. No Python loop runs per pair, so a million pairs cost about what a few sorts do.
"""

from __future__ import annotations

import numpy as np


def _compress(parent: np.ndarray) -> None:
    """Pointer jumping: every node ends up pointing straight at its root (depth halves per pass)."""
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return
        parent[:] = grand


def connected_components(count: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Each of ``count`` nodes' component, named by its smallest node; edges ``left[i]–right[i]``.

    A union-find over the whole edge list at once: each round hooks, for every edge whose ends
    still have different roots, the larger root under the smaller one (``np.minimum.at``: when
    many edges hook one root the smallest target wins), then compresses paths. A pointer only
    ever goes to a smaller node, so no cycle can form, and each round removes at least one root;
    in practice a handful of rounds suffice, even for long chains.
    """
    parent = np.arange(count, dtype=np.int64)
    left = np.asarray(left, dtype=np.int64)
    right = np.asarray(right, dtype=np.int64)
    while len(left):
        a, b = parent[left], parent[right]  # roots: ``parent`` is fully compressed here
        apart = a != b
        if not apart.any():
            break
        a, b = a[apart], b[apart]
        np.minimum.at(parent, np.maximum(a, b), np.minimum(a, b))
        _compress(parent)
        left, right = left[apart], right[apart]  # an edge inside one component stays there
    return parent


def components_of(labels: np.ndarray) -> list[np.ndarray]:
    """The positions in each component of two or more nodes, each in ascending order."""
    order = np.argsort(labels, kind="stable")
    ordered = labels[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(ordered)]
    return [order[start:end] for start, end in zip(starts, ends, strict=True) if end - start > 1]


def unique_pairs(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct unordered pairs (smaller id first), self-pairs dropped: a range search finds each
    pair once from either side (twice on an exact index, possibly once on IVF)."""
    low = np.minimum(left, right).astype(np.int64)
    high = np.maximum(left, right).astype(np.int64)
    keep = low != high
    low, high = low[keep], high[keep]
    if not len(low):
        return low, high
    order = np.lexsort((high, low))
    low, high = low[order], high[order]
    first = np.r_[True, (low[1:] != low[:-1]) | (high[1:] != high[:-1])]
    return low[first], high[first]


def representative(vectors: np.ndarray) -> tuple[int, np.ndarray]:
    """The member closest to the group's mean direction, and each member's cosine to it.

    The mean direction stands for "the picture" the copies share; the member nearest it is the
    most typical copy (O(members), unlike a medoid's all-pairs matrix, so large groups are cheap).
    """
    centre = vectors.mean(axis=0)
    best = int(np.argmax(vectors @ centre))
    return best, np.clip(vectors @ vectors[best], -1.0, 1.0)
