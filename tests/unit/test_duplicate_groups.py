"""The numpy parts of near-duplicate grouping, against plain-Python oracles: components, pairs,
representatives and the keeper rules."""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from vizdex.search.duplicate_groups import (
    components_of,
    connected_components,
    representative,
    unique_pairs,
)
from vizdex.search.keepers import KEEPER_RULES, KeeperRule, choose_keeper
from vizdex.search.records import ImageRecord, ImageStatus, SourceKind


def bfs_components(count: int, edges: list[tuple[int, int]]) -> set[frozenset[int]]:
    """Components of two or more nodes, by breadth-first search (the oracle)."""
    neighbours: dict[int, set[int]] = {node: set() for node in range(count)}
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    seen: set[int] = set()
    found: set[frozenset[int]] = set()
    for start in range(count):
        if start in seen:
            continue
        component = {start}
        queue = deque([start])
        while queue:
            for other in neighbours[queue.popleft()] - component:
                component.add(other)
                queue.append(other)
        seen |= component
        if len(component) > 1:
            found.add(frozenset(component))
    return found


def as_sets(labels: np.ndarray) -> set[frozenset[int]]:
    return {frozenset(int(p) for p in group) for group in components_of(labels)}


@pytest.mark.parametrize(
    ("count", "edges", "seed"),
    [(50, 30, 1), (200, 150, 2), (1000, 900, 3), (1000, 3000, 4), (5000, 2000, 5), (10, 0, 6)],
)
def test_components_match_breadth_first_search(count: int, edges: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    left = rng.integers(0, count, edges)
    right = rng.integers(0, count, edges)  # self-loops and repeats included
    labels = connected_components(count, left, right)
    expected = bfs_components(count, list(zip(left.tolist(), right.tolist(), strict=True)))
    assert as_sets(labels) == expected
    for group in components_of(labels):  # each component is named by its smallest node
        assert set(labels[group].tolist()) == {int(group.min())}


def test_a_long_chain_in_any_order_is_one_component() -> None:
    rng = np.random.default_rng(7)
    order = rng.permutation(5000)
    left, right = order[:-1], order[1:]  # a path through every node, in shuffled order
    shuffle = rng.permutation(len(left))
    labels = connected_components(5000, left[shuffle], right[shuffle])
    assert as_sets(labels) == {frozenset(range(5000))}


def test_no_edges_no_groups() -> None:
    labels = connected_components(4, np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert labels.tolist() == [0, 1, 2, 3] and components_of(labels) == []
    assert components_of(connected_components(0, np.zeros(0), np.zeros(0))) == []


def test_unique_pairs_are_unordered_distinct_and_without_self_pairs() -> None:
    low, high = unique_pairs(np.array([5, 3, 3, 9, 4, 4]), np.array([3, 5, 3, 1, 8, 8]))
    assert list(zip(low.tolist(), high.tolist(), strict=True)) == [(1, 9), (3, 5), (4, 8)]
    empty = unique_pairs(np.array([2]), np.array([2]))
    assert len(empty[0]) == len(empty[1]) == 0


def test_the_representative_is_the_member_nearest_the_mean_direction() -> None:
    tilted = [np.array([1.0, y, z], np.float32) for y, z in ((0.3, 0.0), (-0.2, 0.1), (0.05, 0))]
    rows = np.stack([row / np.linalg.norm(row) for row in tilted])
    best, similarities = representative(rows)
    assert best == int(np.argmax(rows @ rows.mean(axis=0)))
    assert best == 2  # the least tilted one
    np.testing.assert_allclose(similarities, rows @ rows[2], rtol=1e-6)
    assert similarities[best] == pytest.approx(1.0)


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def image(image_id: int, width: int, height: int, size: int, age_days: int) -> ImageRecord:
    created = NOW - timedelta(days=age_days)
    return ImageRecord(
        id=image_id,
        collection_id=1,
        sha256="0" * 64,
        source_kind=SourceKind.UPLOAD,
        source_uri=None,
        original_name=None,
        width=width,
        height=height,
        format="JPEG",
        byte_size=size,
        source_size=None,
        source_mtime_ns=None,
        thumbnail_path=None,
        metadata={},
        status=ImageStatus.READY,
        created_at=created,
        updated_at=created,
    )


def test_keeper_rules() -> None:
    small_old = image(1, 100, 100, 9_000, age_days=30)
    big = image(2, 400, 300, 50_000, age_days=2)
    big_heavier = image(3, 300, 400, 80_000, age_days=1)  # as many pixels, larger file
    heaviest = image(4, 200, 100, 90_000, age_days=10)
    group = [small_old, big, big_heavier, heaviest]
    keeps = {rule: choose_keeper(group, rule, representative=2) for rule in KeeperRule}
    assert keeps == {
        KeeperRule.PIXELS: 3,  # most pixels (tie), then the larger file
        KeeperRule.FILE_SIZE: 4,
        KeeperRule.OLDEST: 1,
        KeeperRule.NEWEST: 3,
        KeeperRule.REPRESENTATIVE: 2,
    }
    assert set(KEEPER_RULES) == {"pixels", "file_size", "oldest", "newest", "representative"}


def test_keeper_ties_fall_to_the_oldest_then_the_smallest_id() -> None:
    first = image(7, 100, 100, 1000, age_days=5)
    twin = replace(first, id=3)
    older = replace(first, id=9, created_at=NOW - timedelta(days=6))
    assert choose_keeper([first, twin, older], representative=7) == 9
    assert choose_keeper([first, twin], representative=7) == 3
    assert choose_keeper([first, twin], KeeperRule("representative"), representative=7) == 7
