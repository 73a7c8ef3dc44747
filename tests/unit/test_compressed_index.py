"""Compressed indexes (IVF with PQ codes) re-ranked with exact float16 vectors from a mapped file:
the policy, recall against exact search, re-ranking doing the work, online changes, the files."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

import vizdex.search.vector_file as vector_file_module
from tests.support.small_disk import fill, small_disk
from tests.unit.test_index import _normalise, brute_force, clustered, recall_at
from vizdex.core.errors import storage_full
from vizdex.search.index import (
    COMPRESSED_MAX_NLIST,
    COMPRESSED_MIN_COUNT,
    RERANK_DEPTHS,
    TUNING_MARGIN,
    IndexBackend,
    IndexPolicy,
    IndexSpec,
    VectorIndex,
    _candidates,
    _split_lists,
    compressed_nlist,
    ivf_nlist,
    tune_nprobe,
    tune_search,
    two_level_centroids,
)
from vizdex.search.vector_file import HEADER_SIZE, VectorFile, VectorFileError, VectorFilePlace

CPU = IndexBackend(use_gpu=False)
DIM = 64
COUNT = 12_000


@dataclass
class Data:
    ids: np.ndarray
    vectors: np.ndarray
    queries: np.ndarray
    centers: np.ndarray


@pytest.fixture(scope="module")
def data() -> Data:
    rng = np.random.default_rng(11)
    centers = _normalise(rng.standard_normal((1500, DIM)))
    vectors = clustered(rng, COUNT, centers, noise=0.8)
    queries = clustered(rng, 300, centers, noise=0.8)  # new points, not in the index
    return Data(np.arange(1, COUNT + 1, dtype=np.int64) * 3, vectors, queries, centers)


def _policy(place: VectorFilePlace | None, rerank: int = 10) -> IndexPolicy:
    return IndexPolicy(exact_max=0, compress_min=0, rerank=rerank, vector_place=place)


@pytest.fixture(scope="module")
def built(data: Data, tmp_path_factory: pytest.TempPathFactory) -> VectorIndex:
    """One compressed, re-ranked index for the tests that only search it."""
    place = VectorFilePlace(tmp_path_factory.mktemp("vectors") / "c", 1, "m")
    return VectorIndex.build(data.ids, data.vectors, _policy(place), CPU, last_seq=7)


def _fresh(data: Data, tmp_path: Path) -> VectorIndex:
    place = VectorFilePlace(tmp_path / "c", 1, "m")
    return VectorIndex.build(data.ids, data.vectors, _policy(place), CPU, last_seq=7)


def test_the_policy_compresses_from_compress_min_and_a_factory_still_overrides() -> None:
    policy = IndexPolicy(exact_max=1000, compress_min=50_000)
    assert [policy.kind_for(n) for n in (1000, 1001, 49_999, 50_000)] == [
        "flat",
        "ivf",
        "ivf",
        "ivfpq",
    ]
    # PQ codebooks need enough points to train: a tiny compress_min waits for them.
    small = IndexPolicy(exact_max=0, compress_min=1)
    assert small.kind_for(COMPRESSED_MIN_COUNT - 1) == "ivf"
    assert small.kind_for(COMPRESSED_MIN_COUNT) == "ivfpq"
    assert IndexPolicy(exact_max=1000).kind_for(10**8) == "ivf"  # compression off by default
    factory = IndexPolicy(exact_max=0, compress_min=1, factory="IVF8,Flat")
    assert factory.kind_for(10**6) == "factory"


def test_recall_at_10_reaches_095_with_reranking_and_falls_without(
    data: Data, built: VectorIndex
) -> None:
    assert built.spec.kind == "ivfpq" and built.approximate
    assert built.spec.rerank in {10 * depth for depth in RERANK_DEPTHS}  # the policy's, or deeper
    assert 1 <= built.spec.nprobe <= built.spec.nlist
    _, truth = brute_force(data.queries, data.vectors, data.ids, 10)
    _, found = built.search(data.queries, 10)
    assert recall_at(found, truth) >= 0.95

    # The control: the same kind of index without re-ranking, even probing every list, misses
    # many true neighbours: the PQ codes alone do not rank well enough.
    control = VectorIndex.build(data.ids, data.vectors, _policy(None), CPU, last_seq=7)
    assert control.spec.kind == "ivfpq" and control.spec.rerank == 0
    _, plain = control.search(data.queries, 10, exhaustive=True)
    assert recall_at(plain, truth) < 0.9


def test_the_build_re_ranks_deeper_when_that_probes_fewer_lists(
    data: Data, built: VectorIndex
) -> None:
    """On these vectors 10 candidates per hit need many probes to reach the target: the build
    takes a deeper re-rank that needs far fewer, and no option it tried beats its choice on
    both counts."""
    picks = np.random.default_rng(5).choice(len(data.ids), 400, replace=False)
    sample, sample_ids = data.vectors[picks], data.ids[picks]
    _, neighbours = brute_force(sample, data.vectors, data.ids, 11)
    index, exact = built._cpu, built._exact
    options = {
        10 * depth: tune_nprobe(
            index, sample, sample_ids, neighbours, target=0.95, exact=exact, rerank=10 * depth
        )
        for depth in RERANK_DEPTHS
    }
    nprobe, rerank, recall = tune_search(
        index, sample, sample_ids, neighbours, target=0.95, exact=exact, rerank=10
    )
    assert (nprobe, recall) == options[rerank][:2] and options[rerank].reached
    assert recall >= 0.95 + TUNING_MARGIN
    assert rerank > 10 and nprobe < options[10].nprobe / 2  # deeper: under half the probes
    for depth_rerank, other in options.items():
        if other.reached and depth_rerank != rerank:
            assert depth_rerank > rerank or other.nprobe > nprobe  # not better on both counts
    assert built.spec.rerank > 10  # the build itself chose a deeper re-rank on these vectors
    # Without exact vectors there is nothing to re-rank: probes alone.
    assert (
        tune_search(index, sample, sample_ids, neighbours, target=0.95, exact=None, rerank=10)[1]
        == 10
    )


def test_a_deeper_re_rank_covers_the_first_ten_hits_only(built: VectorIndex) -> None:
    """The depth is tuned for 10 hits: a deep page, or a filtered search's over-fetch, fetches
    the setting's depth per further hit, not 4x it (and stays within a GPU's 2048)."""
    assert built.spec.rerank_beyond == 10  # the policy's setting, whatever depth was tuned
    deep = IndexSpec(kind="ivfpq", dim=DIM, rerank=40, rerank_beyond=10)
    assert _candidates(deep, 5) == 200 and _candidates(deep, 10) == 400
    assert _candidates(deep, 64) == 400 + 54 * 10 <= 2048
    older = IndexSpec.from_dict({"kind": "ivfpq", "dim": DIM, "rerank": 10})  # no such field
    assert older.rerank_beyond == 0 and _candidates(older, 64) == 640


def test_reranked_scores_are_exact_cosines(data: Data, built: VectorIndex) -> None:
    scores, found = built.search(data.queries[:20], 10)
    position = {int(i): n for n, i in enumerate(data.ids)}
    for query, row_scores, row_ids in zip(data.queries[:20], scores, found, strict=True):
        expected = np.array([data.vectors[position[int(i)]] @ query for i in row_ids])
        # float16 storage: exact up to ~1e-3 (PQ scores are off by ~1e-1)
        np.testing.assert_allclose(row_scores, expected, atol=2e-3)
        assert (np.diff(row_scores) <= 1e-6).all()  # best first


def test_allowed_ids_and_range_search_are_reranked_too(data: Data, built: VectorIndex) -> None:
    allowed = data.ids[::7]
    _, found = built.search(data.queries[:30], 10, allowed_ids=allowed)
    assert np.isin(found[found >= 0], allowed).all()

    query = data.vectors[:5]
    lims, scores, ids = built.range_search(query, 0.8)
    position = {int(i): n for n, i in enumerate(data.ids)}
    for row in range(5):
        hits = ids[lims[row] : lims[row + 1]]
        assert data.ids[row] in hits  # a vector finds itself at its exact score ~1
        exact = np.array([data.vectors[position[int(i)]] @ query[row] for i in hits])
        np.testing.assert_allclose(scores[lims[row] : lims[row + 1]], exact, atol=2e-3)
        assert (scores[lims[row] : lims[row + 1]] >= 0.8 - 1e-6).all()


def test_adds_and_deletes_go_in_online_and_the_vector_file_follows(
    data: Data, tmp_path: Path
) -> None:
    index = _fresh(data, tmp_path)
    rng = np.random.default_rng(5)
    new = clustered(rng, 50, data.centers, noise=0.8)
    new_ids = np.arange(10**9, 10**9 + 50, dtype=np.int64)
    index.add(new_ids, new, upto_seq=8)
    scores, found = index.search(new, 1)
    np.testing.assert_array_equal(found[:, 0], new_ids)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)  # unit length kept in float16

    gone = np.concatenate([data.ids[:100], new_ids[:10]])
    index.remove(gone, upto_seq=9)
    _, found = index.search(np.concatenate([data.vectors[:100], new[:10]]), 10)
    assert not np.isin(found, gone).any()
    held = index.exact_ids()
    assert held is not None
    assert sorted(held.tolist()) == sorted(index.ids().tolist())
    assert index.ntotal == COUNT + 50 - 110

    # A re-embedded image (removed and added again) is scored with its new vector.
    moved = clustered(rng, 1, data.centers, noise=0.8)
    index.apply(
        removed_ids=data.ids[200:201], added_ids=data.ids[200:201], added_vectors=moved, upto_seq=10
    )
    scores, found = index.search(moved, 1)
    assert found[0, 0] == data.ids[200] and scores[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_the_vector_file_grows_past_its_capacity(tmp_path: Path) -> None:
    place = VectorFilePlace(tmp_path / "c", 3, "m")
    rng = np.random.default_rng(0)
    first = _normalise(rng.standard_normal((10, 8)))
    exact = place.create([(np.arange(10), first)], count=10, dim=8, last_seq=1)
    assert exact.capacity == 1024
    before = exact.path
    more = _normalise(rng.standard_normal((3000, 8)))
    exact.apply(np.arange(5), np.arange(100, 3100), more)
    # A new file under a new name: the snapshot on disk still names the old one, whole.
    assert exact.capacity >= 3005 and exact.path != before and before.exists()
    got, found = exact.vectors(np.array([7, 100, 3099, 2]))
    assert found.tolist() == [True, True, True, False]
    np.testing.assert_allclose(got[1], more[0], atol=1e-3)
    assert sorted(exact.live_ids().tolist()) == [5, 6, 7, 8, 9, *range(100, 3100)]


def test_a_full_disk_refuses_new_rows_before_the_index_or_its_file_changes(
    data: Data, tmp_path: Path
) -> None:
    """The vector file is sparse and written through its map: without room reserved first, a
    full disk killed the process (SIGBUS) at the first new row instead of raising."""
    with small_disk(tmp_path / "disk", size_mb=16) as disk:
        place = VectorFilePlace(disk / "c", 1, "m")
        index = VectorIndex.build(data.ids, data.vectors, _policy(place), CPU, last_seq=7)
        assert index.spec.rerank > 0  # compressed, with its exact vectors in the file
        rng = np.random.default_rng(9)
        new = _normalise(rng.standard_normal((3000, DIM)))  # 375 KiB of float16 rows
        new_ids = np.arange(10**9, 10**9 + 3000, dtype=np.int64)
        filler = fill(disk)
        with pytest.raises(OSError) as raised:
            index.add(new_ids, new, upto_seq=8)
        assert raised.value.errno == errno.ENOSPC
        assert storage_full(raised.value) is not None  # answered as 503 storage_full
        assert index.ntotal == COUNT and index.last_seq == 7  # nothing half-applied
        held = index.exact_ids()
        assert held is not None and len(held) == COUNT
        filler.unlink()  # room again: the same change goes in whole
        index.add(new_ids, new, upto_seq=8)
        _scores, found = index.search(new[:5], 1)
        np.testing.assert_array_equal(found[:, 0], new_ids[:5])
        assert index.ntotal == COUNT + 3000


def test_saved_files_are_mapped_back_and_copied_to_memory_at_the_first_change(
    data: Data, tmp_path: Path
) -> None:
    index = _fresh(data, tmp_path)
    fields, spec, seq = index.save_files(tmp_path / "c")
    assert seq == 7 and fields["index_file"].endswith(".faiss")
    mapped = VectorIndex.open_mapped(tmp_path / fields["index_file"], spec, CPU, last_seq=seq)
    assert mapped.mapped and mapped.ntotal == COUNT
    # No prefetch threads started per search (they cost more than the search itself).
    invlists = faiss.extract_index_ivf(mapped._cpu).invlists
    assert invlists is not None
    lists: Any = faiss.downcast_InvertedLists(invlists)
    assert type(lists).__name__ == "OnDiskInvertedLists" and lists.prefetch_nthread == 0
    place = VectorFilePlace(tmp_path / "c", 1, "m")
    mapped.attach_exact(place.open(fields["vector_file"], dim=DIM, last_seq=7))
    expected = index.search(data.queries[:50], 10)
    got = mapped.search(data.queries[:50], 10)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[0], expected[0], atol=1e-6)

    mapped.remove(data.ids[:3], upto_seq=8)  # read-only mapped lists: copied, then changed
    assert not mapped.mapped and mapped.ntotal == COUNT - 3
    _, found = mapped.search(data.vectors[:3], 5)
    assert not np.isin(found, data.ids[:3]).any()


def test_a_torn_or_foreign_vector_file_is_refused(data: Data, tmp_path: Path) -> None:
    place = VectorFilePlace(tmp_path / "c", 1, "m")
    rng = np.random.default_rng(0)
    vectors = _normalise(rng.standard_normal((500, DIM)))
    exact = place.create([(np.arange(500), vectors)], count=500, dim=DIM, last_seq=4)
    name, path = exact.path.name, exact.path
    exact.close()
    assert place.open(name, dim=DIM, last_seq=4).count == 500

    with pytest.raises(VectorFileError, match="committed at sequence 4"):
        place.open(name, dim=DIM, last_seq=5)  # the index snapshot moved on without it
    with pytest.raises(VectorFileError, match="another collection"):
        VectorFilePlace(tmp_path / "c", 2, "m").open(name, dim=DIM, last_seq=4)

    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # a short (torn) file
    with pytest.raises(VectorFileError, match="truncated"):
        place.open(name, dim=DIM, last_seq=4)
    damaged = bytearray(whole)
    damaged[20] ^= 0xFF  # a header byte
    path.write_bytes(bytes(damaged))
    with pytest.raises(VectorFileError, match="checksum"):
        place.open(name, dim=DIM, last_seq=4)
    path.write_bytes(whole[: HEADER_SIZE // 512])
    with pytest.raises(VectorFileError, match="truncated header"):
        place.open(name, dim=DIM, last_seq=4)


def test_rows_appended_after_the_commit_are_not_trusted_after_a_crash(tmp_path: Path) -> None:
    """Only what a commit covered counts: rows appended later are overwritten by the replay
    from the committed number, and removals made in place are simply made again."""
    place = VectorFilePlace(tmp_path / "c", 1, "m")
    rng = np.random.default_rng(1)
    vectors = _normalise(rng.standard_normal((20, 8)))
    exact = place.create([(np.arange(20), vectors[:20])], count=20, dim=8, last_seq=3)
    exact.apply(np.array([1, 2]), np.array([50, 51]), _normalise(rng.standard_normal((2, 8))))
    name = exact.path.name
    exact._map.flush()  # the pages reached the disk, the header did not: a crash now
    reopened = VectorFile(tmp_path / name, collection_id=1, model="m", dim=8)
    assert reopened.count == 20 and reopened.last_seq == 3
    assert sorted(reopened.live_ids().tolist()) == [0, *range(3, 20)]  # removals came through
    # Replaying seq 4..: the same removals (no-ops) and the additions, once.
    reopened.apply(np.array([1, 2]), np.array([50, 51]), _normalise(rng.standard_normal((2, 8))))
    assert sorted(reopened.live_ids().tolist()) == [0, *range(3, 20), 50, 51]
    reopened.commit(4)
    again = VectorFile(tmp_path / name, collection_id=1, model="m", dim=8)
    assert again.last_seq == 4 and again.count == 22


def test_row_checksums_catch_a_flipped_byte_at_open_or_at_first_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(2)
    vectors = _normalise(rng.standard_normal((1000, DIM)).astype(np.float32))
    ids = np.arange(1, 1001, dtype=np.int64)
    place = VectorFilePlace(tmp_path / "c", 1, "m")
    exact = place.create([(ids, vectors)], count=1000, dim=DIM, last_seq=3)
    rows = vector_file_module.block_rows(DIM)
    # Appended and committed rows get their checksums too: no false alarm on reopen.
    exact.apply(np.zeros(0, np.int64), ids[:300] + 5000, vectors[:300])
    exact.commit(4)
    path, vectors_at = exact.path, vector_file_module._layout(DIM, exact.capacity)[1]
    exact.close()
    clean = place.open(path.name, dim=DIM, last_seq=4)
    assert clean.vectors(np.arange(1, 1001))[1].all() and not clean.damaged
    clean.close()

    victim = 1000 + 120  # a row appended by apply, in a block its commit filled
    with open(path, "r+b") as handle:
        handle.seek(vectors_at + 2 * DIM * victim + 1)
        byte = handle.read(1)[0]
        handle.seek(-1, 1)
        handle.write(bytes([byte ^ 0x01]))
    with pytest.raises(VectorFileError, match="checksum"):
        place.open(path.name, dim=DIM, last_seq=4)  # a small file is verified whole at open

    monkeypatch.setattr(vector_file_module, "VERIFY_AT_OPEN", 0)  # as a 10M-row file would be
    lazy = place.open(path.name, dim=DIM, last_seq=4)
    assert not lazy.damaged
    same_block = 5000 + 1 + np.arange(victim - victim % rows, victim - victim % rows + rows) - 1000
    _, found = lazy.vectors(np.concatenate([[7], same_block]))
    assert found[0] and not found[1:].any()  # the damaged block's rows are reported missing
    assert lazy.damaged
    lazy.close()


def test_compressed_lists_keep_growing_with_the_collection() -> None:
    # 2048 lists at 10M needed 516 probes for recall 0.95: the lists follow 4·√N much further.
    assert compressed_nlist(12_000) == ivf_nlist(12_000)
    assert compressed_nlist(1_000_000) == ivf_nlist(1_000_000) == 4000
    assert compressed_nlist(10_000_000) == ivf_nlist(10_000_000) == 12_649
    assert compressed_nlist(10**12) == COMPRESSED_MAX_NLIST < ivf_nlist(10**12)


@pytest.mark.parametrize(
    "sizes",
    [[500, 0, 30, 1, 1, 4000], [40] * 9, [1, 1, 1, 1], [10_000, 3, 0, 0, 2]],
)
def test_lists_are_split_between_groups_by_their_share(sizes: list[int]) -> None:
    groups = np.array(sizes)
    nlist = min(int(groups.sum()), 97)
    shares = _split_lists(groups, nlist)
    assert shares.sum() == nlist
    assert ((shares >= 1) == (groups > 0)).all()  # every non-empty group, no empty one
    assert (shares <= groups).all()  # k-means needs a point per centroid
    expected = groups * nlist / groups.sum()
    assert np.abs(shares - expected).max() < 2  # in proportion, give or take rounding


def test_two_level_training_makes_unit_balanced_lists(data: Data) -> None:
    centroids = two_level_centroids(data.vectors, 300, seed=0)
    assert centroids.shape == (300, DIM) and centroids.dtype == np.float32
    assert np.allclose(np.linalg.norm(centroids, axis=1), 1, atol=1e-5)  # spherical, like the data
    sizes = np.bincount((data.vectors @ centroids.T).argmax(axis=1), minlength=300)
    assert sizes.max() < 10 * COUNT / 300  # k-means, not one list holding everything
    assert (sizes > 0).mean() > 0.95
    # Lists are local: a held-out query's nearest list holds its nearest neighbour most often.
    _, nearest = brute_force(data.queries, data.vectors, np.arange(COUNT), 1)
    truth = nearest[:, 0]
    home = (data.queries @ centroids.T).argmax(axis=1)
    own = (data.vectors[truth] @ centroids.T).argmax(axis=1)
    assert (home == own).mean() > 0.5
    shuffled = np.random.default_rng(0).permutation(data.vectors.shape[1])  # control
    assert ((data.queries @ centroids[:, shuffled].T).argmax(axis=1) == own).mean() < 0.2


def test_a_compressed_build_trains_its_lists_in_two_levels(data: Data, built: VectorIndex) -> None:
    """The build's lists are ``two_level_centroids`` of its training sample (here the whole
    collection: 40 per list exceeds it), not FAISS's flat k-means (the control)."""
    ivf = faiss.extract_index_ivf(built._cpu)
    nlist = int(ivf.nlist)
    assert 40 * nlist >= COUNT  # so the sample is every vector, in the order the build read them
    lists = ivf.quantizer.reconstruct_n(0, nlist)
    expected = two_level_centroids(data.vectors, nlist, seed=0)
    np.testing.assert_allclose(lists, expected, atol=1e-5)
    flat = faiss.Kmeans(DIM, nlist, niter=20, spherical=True, seed=0)
    flat.train(data.vectors)
    assert flat.centroids is not None
    assert not np.allclose(np.sort(lists, axis=0), np.sort(flat.centroids, axis=0), atol=1e-3)


def _resident_pages(array: np.ndarray) -> np.ndarray:
    """Per page of ``array``'s memory (page-aligned): whether it is in RAM now (mincore(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    address = array.__array_interface__["data"][0]
    assert address % mmap.PAGESIZE == 0
    pages = -(-array.nbytes // mmap.PAGESIZE)
    out = (ctypes.c_ubyte * pages)()
    result = libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(array.nbytes), out)
    assert result == 0, os.strerror(ctypes.get_errno())
    return np.frombuffer(memoryview(out), dtype=np.uint8) & 1 == 1


def test_a_lookup_asks_for_all_its_rows_blocks_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-ranking a cold file must not wait one disk round trip per row: the blocks of every
    row looked up are requested before any is read (and only those: the file stays cold)."""
    if mmap.PAGESIZE != 4096:  # the file's regions are 4 KiB-aligned, blocks 16 KiB
        pytest.skip(f"blocks do not fill whole {mmap.PAGESIZE}-byte pages here")
    monkeypatch.setattr(vector_file_module, "VERIFY_AT_OPEN", 0)  # open reads no rows
    count, rows_per_block = 40_000, vector_file_module.block_rows(DIM)
    vectors = _normalise(np.random.default_rng(4).standard_normal((count, DIM)))
    place = VectorFilePlace(tmp_path / "c", 1, "m")
    path = place.create([(np.arange(1, count + 1), vectors)], count=count, dim=DIM, last_seq=1).path
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)
    exact = place.open(path.name, dim=DIM, last_seq=1)
    block_pages = 2 * DIM * rows_per_block // mmap.PAGESIZE
    if _resident_pages(exact._vectors).any():
        pytest.skip("this filesystem keeps file pages in memory (tmpfs): nothing to prefetch")
    wanted = np.array([5, 70, 301], dtype=np.int64) * rows_per_block  # rows, one per block
    left_alone = np.array([6, 71, 302], dtype=np.int64) * rows_per_block
    exact.positions(left_alone + 1)  # the ids are 1-based: row r holds id r + 1
    exact.positions(wanted + 1, prefetch=True)
    deadline = time.monotonic() + 30  # the reads are asynchronous: wait for them to land
    while True:
        pages = _resident_pages(exact._vectors[:count])
        blocks = pages[: len(pages) // block_pages * block_pages].reshape(-1, block_pages)
        resident = np.asarray(blocks.all(axis=1), dtype=bool)
        if resident[wanted // rows_per_block].all() or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert resident[wanted // rows_per_block].all()
    assert not resident[left_alone // rows_per_block].any()
    assert resident.sum() <= len(wanted) + 2  # no read-ahead around them (MADV_RANDOM)
    exact.close()
