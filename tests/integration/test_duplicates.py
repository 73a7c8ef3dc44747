"""Near-duplicate groups on a real catalog and real FAISS indexes (exact and IVF).

Stored vectors are data here: seeded clusters of near-copies around random directions, so the
true groups are known by construction and checked against a brute-force oracle (numpy all-pairs
cosine, breadth-first components). The same scan through the real models and photo edits is in
``test_duplicates_photos.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from tests.conftest import ImageFactory, UnitVectors
from tests.unit.test_duplicate_groups import bfs_components
from vizdex.search import (
    Catalog,
    DuplicateOptions,
    DuplicateScan,
    ImageFilter,
    IndexStore,
    InvalidQueryError,
    KeeperRule,
    QuerySettings,
    SearchService,
    SearchSettings,
    TooManyPairsError,
)

DIM = 32
MODEL = "m"


@pytest.fixture
def service(catalog: Catalog, search_settings: SearchSettings) -> Iterator[SearchService]:
    settings = replace(search_settings.index, device="cpu")
    indexes = IndexStore(catalog, settings)
    yield SearchService(catalog, indexes, {})
    indexes.close()


def clustered(
    rng: np.random.Generator, sizes: list[int], *, spread: float = 0.04
) -> tuple[np.ndarray, list[int]]:
    """Unit vectors in clusters of ``sizes`` (1: a loner); returns (vectors, cluster of each)."""
    centres = rng.standard_normal((len(sizes), DIM))
    rows, labels = [], []
    for label, (centre, size) in enumerate(zip(centres, sizes, strict=True)):
        for _ in range(size):
            rows.append(centre / np.linalg.norm(centre) + spread * rng.standard_normal(DIM))
            labels.append(label)
    vectors = np.asarray(rows, np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), labels


def add(
    service: SearchService,
    new_image: ImageFactory,
    collection: str,
    vectors: np.ndarray,
    tag: object = None,
    **fields: object,
) -> list[int]:
    items = [
        new_image((collection, i, tag), {MODEL: row}, **fields) for i, row in enumerate(vectors)
    ]
    return [added.id for added in service.add_images(collection, items)]


def id_groups(scan: DuplicateScan) -> set[frozenset[int]]:
    return {frozenset(group.image_ids) for group in scan.groups}


def oracle(ids: list[int], vectors: np.ndarray, threshold: float) -> set[frozenset[int]]:
    scores = vectors @ vectors.T
    pairs = [
        (a, b)
        for a in range(len(ids))
        for b in range(a + 1, len(ids))
        if scores[a, b] >= threshold - 1e-6
    ]
    return {frozenset(ids[p] for p in group) for group in bfs_components(len(ids), pairs)}


def known(ids: list[int], labels: list[int]) -> set[frozenset[int]]:
    found: dict[int, set[int]] = {}
    for image_id, label in zip(ids, labels, strict=True):
        found.setdefault(label, set()).add(image_id)
    return {frozenset(group) for group in found.values() if len(group) > 1}


def test_exact_groups_are_the_known_clusters(
    service: SearchService, new_image: ImageFactory, rng: np.random.Generator
) -> None:
    service.catalog.create_collection("photos", [MODEL])
    vectors, labels = clustered(rng, [1, 2, 5, 1, 3, 1, 8, 2, 1, 1] * 5)
    ids = add(service, new_image, "photos", vectors)
    scan = service.duplicates.scan("photos", DuplicateOptions(threshold=0.9))
    assert id_groups(scan) == known(ids, labels) == oracle(ids, vectors, 0.9)
    assert not scan.approximate and scan.nprobe == 0 and scan.model == MODEL
    assert scan.scanned == len(ids) and scan.images == sum(len(g) for g in known(ids, labels))
    sizes = [len(group.image_ids) for group in scan.groups]
    assert sizes == sorted(sizes, reverse=True)  # largest groups first
    for group in scan.groups:  # the representative first, at 1.0; the others by score
        assert group.similarities[0] == pytest.approx(1.0, abs=1e-5)
        assert list(group.similarities[1:]) == sorted(group.similarities[1:], reverse=True)
        assert len(group.key) == 16


def test_groups_are_transitive_and_follow_the_threshold(
    service: SearchService, new_image: ImageFactory
) -> None:
    """a–b and b–c are copies, a–c is not: one group at 0.9; none above every score."""
    service.catalog.create_collection("chain", [MODEL])
    angle = np.deg2rad(20.0)  # cos 20° = 0.94, cos 40° = 0.77
    rows = [[np.cos(k * angle), np.sin(k * angle)] + [0.0] * (DIM - 2) for k in range(3)]
    ids = add(service, new_image, "chain", np.asarray(rows, np.float32))
    finder = service.duplicates
    assert id_groups(finder.scan("chain", DuplicateOptions(threshold=0.9))) == {frozenset(ids)}
    assert id_groups(finder.scan("chain", DuplicateOptions(threshold=0.95))) == set()
    everything = finder.scan("chain", DuplicateOptions(threshold=-1.0))
    assert id_groups(everything) == {frozenset(ids)} and everything.pairs == 3


def test_identical_vectors_group_at_threshold_one(
    service: SearchService, new_image: ImageFactory
) -> None:
    service.catalog.create_collection("same", [MODEL])
    row = np.ones(DIM, np.float32) / np.sqrt(DIM)
    ids = add(service, new_image, "same", np.stack([row, row, -row]))
    scan = service.duplicates.scan("same", DuplicateOptions(threshold=1.0))
    assert id_groups(scan) == {frozenset(ids[:2])}


@pytest.mark.parametrize("threshold", [1.0001, -1.0001, 2.0, float("nan"), float("inf")])
def test_a_threshold_outside_minus_one_to_one_is_refused(threshold: float) -> None:
    with pytest.raises(InvalidQueryError, match="between -1 and 1"):
        DuplicateOptions(threshold=threshold)


def test_a_threshold_that_matches_everything_stops_at_the_pair_limit(
    catalog: Catalog,
    search_settings: SearchSettings,
    new_image: ImageFactory,
    unit_vectors: UnitVectors,
) -> None:
    """At threshold -1 every image pairs with every other: n²/2 pairs, 3 GB held for 20,000
    images (the size a request scans at once), so a read-only caller could exhaust the server's
    memory. Past ``duplicate_pairs_max`` distinct pairs the scan stops with ``too_many_pairs``;
    at the limit itself it still answers, each pair counted once."""
    indexes = IndexStore(catalog, replace(search_settings.index, device="cpu"))
    count = 300
    every = count * (count - 1) // 2
    try:
        limited = SearchService(catalog, indexes, {}, QuerySettings(duplicate_pairs_max=1000))
        catalog.create_collection("crowd", [MODEL])
        add(limited, new_image, "crowd", unit_vectors(count, DIM))
        with pytest.raises(TooManyPairsError, match="more than 1,000 pairs") as refused:
            limited.duplicates.scan("crowd", DuplicateOptions(threshold=-1.0))
        assert refused.value.code == "too_many_pairs"
        at_limit = SearchService(catalog, indexes, {}, QuerySettings(duplicate_pairs_max=every))
        scan = at_limit.duplicates.scan("crowd", DuplicateOptions(threshold=-1.0))
        assert scan.pairs == every and len(scan.groups) == 1 and scan.images == count
    finally:
        indexes.close()


def test_empty_and_single_image_collections_have_no_groups(
    service: SearchService, new_image: ImageFactory
) -> None:
    service.catalog.create_collection("empty", [MODEL])
    scan = service.duplicates.scan("empty", DuplicateOptions())
    assert scan.groups == [] and scan.scanned == 0 and scan.pairs == 0
    service.catalog.create_collection("one", [MODEL])
    add(service, new_image, "one", np.eye(1, DIM, dtype=np.float32))
    scan = service.duplicates.scan("one", DuplicateOptions(threshold=-1.0))
    assert scan.groups == [] and scan.scanned == 1
    assert service.duplicates.page(scan).groups == []


def test_a_model_the_collection_lacks_is_refused(service: SearchService) -> None:
    service.catalog.create_collection("photos", [MODEL])
    with pytest.raises(InvalidQueryError, match="not embedded with model 'other'"):
        service.duplicates.scan("photos", DuplicateOptions(model="other"))


def test_ivf_finds_the_same_groups(
    catalog: Catalog, service: SearchService, new_image: ImageFactory, rng: np.random.Generator
) -> None:
    service.catalog.create_collection("big", [MODEL], exact_max=0)  # IVF from the first vector on
    vectors, labels = clustered(rng, [1, 3, 1, 2, 1, 1, 4, 1] * 60, spread=0.03)
    ids = add(service, new_image, "big", vectors)
    service.indexes.wait_idle()  # the retrain to IVF runs in the background
    record = catalog.get_collection("big")
    info = service.indexes.info(record, MODEL)
    assert info.kind == "ivf" and info.nlist > 1
    scan = service.duplicates.scan("big", DuplicateOptions(threshold=0.9))
    assert scan.approximate and scan.nprobe == info.nprobe
    assert id_groups(scan) == known(ids, labels) == oracle(ids, vectors, 0.9)
    one_list = service.duplicates.scan("big", DuplicateOptions(threshold=0.9, nprobe=1))
    assert one_list.nprobe == 1 and one_list.pairs <= scan.pairs


def test_a_filter_groups_only_matching_images(
    service: SearchService, new_image: ImageFactory, rng: np.random.Generator
) -> None:
    service.catalog.create_collection("trips", [MODEL])
    vectors, _ = clustered(rng, [4, 4])
    # Cluster 0 has two 2024 images, cluster 1 one: only cluster 0 still has a pair.
    years = [2024, 2024, 2023, 2023, 2024, 2023, 2023, 2023]
    ids: list[int] = []
    for row, year in zip(vectors, years, strict=True):
        ids += add(service, new_image, "trips", row[None, :], metadata={"year": year}, tag=len(ids))
    scan = service.duplicates.scan(
        "trips", DuplicateOptions(filters=ImageFilter(metadata={"year": 2024}))
    )
    assert id_groups(scan) == {frozenset(ids[:2])} and scan.scanned == 3


def test_pages_carry_records_keepers_and_leave_out_deleted_images(
    service: SearchService, new_image: ImageFactory, rng: np.random.Generator
) -> None:
    service.catalog.create_collection("keep", [MODEL])
    vectors, _ = clustered(rng, [3, 2, 2])
    sizes = [(100, 100, 5000), (200, 100, 4000), (200, 100, 6000), (50, 50, 10), (60, 60, 5)]
    sizes += [(10, 10, 1), (10, 10, 2)]
    ids = [
        add(service, new_image, "keep", row[None, :], i, width=w, height=h, byte_size=b)[0]
        for i, (row, (w, h, b)) in enumerate(zip(vectors, sizes, strict=True))
    ]
    finder = service.duplicates
    scan = finder.scan("keep", DuplicateOptions())
    page = finder.page(scan, offset=0, limit=2)
    assert len(page.groups) == 2 and page.offset == 0 and page.limit == 2
    first = page.groups[0]
    assert {m.image.id for m in first.members} == set(ids[:3])
    assert first.keeper_id == ids[2]  # most pixels (tied), then the larger file
    assert first.members[0].keeper and first.members[0].image.id == ids[2]
    assert sum(m.representative for m in first.members) == 1
    oldest = finder.page(scan, limit=1, prefer=KeeperRule.OLDEST).groups[0]
    assert oldest.keeper_id == ids[0]
    last = finder.page(scan, offset=2, limit=5)
    assert [{m.image.id for m in g.members} for g in last.groups] == [set(ids[5:7])]
    # Deleting the second group's non-keeper leaves it one image: it drops out of the page.
    service.delete_images("keep", [ids[4]])
    assert [g.keeper_id for g in finder.page(scan).groups] == [ids[2], ids[6]]
    with pytest.raises(InvalidQueryError):
        finder.page(scan, offset=-1)


def test_a_scan_round_trips_through_json(
    service: SearchService, new_image: ImageFactory, rng: np.random.Generator
) -> None:
    service.catalog.create_collection("stored", [MODEL])
    vectors, _ = clustered(rng, [2, 3])
    add(service, new_image, "stored", vectors)
    scan = service.duplicates.scan("stored", DuplicateOptions())
    assert DuplicateScan.from_json(scan.to_json()) == scan


def test_progress_is_reported_and_a_cancelled_scan_stops(
    service: SearchService, new_image: ImageFactory, rng: np.random.Generator
) -> None:
    service.catalog.create_collection("slow", [MODEL])
    vectors, _ = clustered(rng, [2] * 50)
    add(service, new_image, "slow", vectors)
    seen: list[tuple[int, int]] = []
    service.duplicates.scan("slow", DuplicateOptions(), progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (0, 100) and seen[-1] == (100, 100)
    stopped = service.duplicates.scan("slow", DuplicateOptions(), cancelled=lambda: True)
    assert stopped.scanned == 0 and stopped.groups == []
