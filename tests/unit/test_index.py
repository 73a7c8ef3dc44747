"""FAISS indexes on their own: exactness, IVF recall, deletes, persistence format, GPU parity."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from tests.conftest import UnitVectors
from vizdex.core.errors import InvalidInputError
from vizdex.search.errors import IndexCorruptError
from vizdex.search.index import (
    IndexBackend,
    IndexPolicy,
    IndexSpec,
    VectorIndex,
    factory_min_count,
    gpu_available,
    ivf_nlist,
    validate_factory,
)
from vizdex.search.index_file import MAGIC, move_aside, read_snapshot, write_snapshot
from vizdex.search.rwlock import ReadWriteLock

CPU = IndexBackend(use_gpu=False)


def _normalise(vectors: np.ndarray) -> np.ndarray:
    return np.asarray(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), np.float32)


def clustered(
    rng: np.random.Generator, count: int, centers: np.ndarray, noise: float
) -> np.ndarray:
    """Points around random centres on the sphere, like embeddings of related photos."""
    picked = centers[rng.integers(len(centers), size=count)]
    spread = rng.standard_normal((count, centers.shape[1])) * (noise / np.sqrt(centers.shape[1]))
    return _normalise(picked + spread)


def brute_force(
    queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ vectors.T
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.take_along_axis(top, np.argsort(-top_scores, axis=1, kind="stable"), axis=1)
    return np.take_along_axis(scores, order, axis=1), ids[order]


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(a, b)) for a, b in zip(found, truth, strict=True))
    return hits / truth.size


def test_exact_search_equals_numpy_brute_force(unit_vectors: UnitVectors) -> None:
    vectors, queries = unit_vectors(3000, 64), unit_vectors(25, 64)
    ids = np.arange(3000, dtype=np.int64) * 7 + 11  # ids are image ids, not positions
    index = VectorIndex.build(ids, vectors, IndexPolicy(exact_max=10_000), CPU, last_seq=3000)
    assert index.spec.kind == "flat" and not index.approximate
    scores, found = index.search(queries, 10)
    truth_scores, truth_ids = brute_force(queries, vectors, ids, 10)
    np.testing.assert_array_equal(found, truth_ids)
    np.testing.assert_allclose(scores, truth_scores, rtol=0, atol=1e-5)


def test_exact_search_restricted_to_allowed_ids(unit_vectors: UnitVectors) -> None:
    vectors, queries = unit_vectors(2000, 32), unit_vectors(5, 32)
    ids = np.arange(2000, dtype=np.int64) + 1
    index = VectorIndex.build(ids, vectors, IndexPolicy(exact_max=10_000), CPU, last_seq=1)
    allowed = ids[::13]
    scores, found = index.search(queries, 8, allowed_ids=allowed)
    truth_scores, truth_ids = brute_force(queries, vectors[::13], allowed, 8)
    np.testing.assert_array_equal(found, truth_ids)
    np.testing.assert_allclose(scores, truth_scores, atol=1e-5)


def test_k_beyond_the_index_pads_with_missing_slots(unit_vectors: UnitVectors) -> None:
    index = VectorIndex.empty(8, CPU)
    scores, found = index.search(unit_vectors(2, 8), 3)
    assert (found == -1).all() and np.isneginf(scores).all()
    index.add(np.array([5, 6]), unit_vectors(2, 8), upto_seq=2)
    scores, found = index.search(unit_vectors(1, 8), 4)
    assert sorted(found[0, :2].tolist()) == [5, 6] and found[0, 2:].tolist() == [-1, -1]
    assert np.isneginf(scores[0, 2:]).all()
    with pytest.raises(InvalidInputError):
        index.search(unit_vectors(1, 9), 1)


def test_removed_ids_are_never_returned(unit_vectors: UnitVectors) -> None:
    vectors = unit_vectors(500, 16)
    ids = np.arange(1, 501, dtype=np.int64)
    for policy in (IndexPolicy(exact_max=10_000), IndexPolicy(exact_max=0)):
        index = VectorIndex.build(ids, vectors, policy, CPU, last_seq=500)
        gone = ids[::3]
        index.remove(gone, upto_seq=501)
        assert index.last_seq == 501 and index.ntotal == 500 - len(gone)
        _, found = index.search(vectors, 20, exhaustive=True)
        assert not np.isin(found, gone).any()
        assert sorted(index.ids().tolist()) == sorted(set(ids.tolist()) - set(gone.tolist()))


def test_ivf_recall_at_10_is_at_least_095_on_50k_clustered_vectors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(7)
    centers = _normalise(rng.standard_normal((5000, 512)))
    vectors = clustered(rng, 50_000, centers, noise=0.8)
    queries = clustered(rng, 500, centers, noise=0.8)  # new points, not in the index
    ids = np.arange(1, 50_001, dtype=np.int64)
    trained: list[int] = []
    real_train = faiss.IndexIVFFlat.train

    def train(self: Any, x: np.ndarray) -> Any:
        trained.append(len(x))  # the real k-means still runs
        return real_train(self, x)

    monkeypatch.setattr(faiss.IndexIVFFlat, "train", train)
    policy = IndexPolicy(exact_max=0)
    index = VectorIndex.build(ids, vectors, policy, CPU, last_seq=1)
    assert index.spec.kind == "ivf" and index.approximate
    assert index.spec.nlist == ivf_nlist(50_000) == 894  # about 4·√N
    assert 1 < index.spec.nprobe < index.spec.nlist  # tuned, not trivially all lists
    # The build's cost is bounded by construction: one k-means on a sample of 40 points per
    # list, not on every vector (what a stopwatch used to stand in for).
    assert trained == [40 * 894] and 40 * 894 < 50_000
    _, found = index.search(queries, 10)
    _, truth = brute_force(queries, vectors, ids, 10)
    assert recall_at(found, truth) >= 0.95


def test_ivf_nlist_never_has_fewer_than_39_points_per_list() -> None:
    assert ivf_nlist(1) == 1
    assert ivf_nlist(1000) == 25  # 4·√1000 ≈ 126 would leave 8 points per list
    assert ivf_nlist(1_000_000) == 4000


def test_policy_picks_flat_then_ivf_or_the_factory_and_retrains_on_growth() -> None:
    policy = IndexPolicy(exact_max=100)
    assert policy.kind_for(100) == "flat" and policy.kind_for(101) == "ivf"
    factory = IndexPolicy(exact_max=100, factory="IVF8,Flat")
    assert factory.kind_for(311) == "flat" and factory.kind_for(312) == "factory"  # 39 per list
    flat = IndexSpec(kind="flat", dim=8)
    assert not policy.needs_retrain(flat, 100) and policy.needs_retrain(flat, 101)
    ivf = IndexSpec(kind="ivf", dim=8, nlist=4, nprobe=2, trained_on=200)
    assert not policy.needs_retrain(ivf, 400) and policy.needs_retrain(ivf, 401)


def test_factory_strings_are_validated_and_used(unit_vectors: UnitVectors) -> None:
    validate_factory("IVF16,Flat", 32)
    validate_factory("PCA16,IVF8,Flat", 32)
    with pytest.raises(InvalidInputError, match="not valid") as refused:
        validate_factory("NoSuchIndex", 32)
    # FAISS's reason reaches the user; its C++ signature and source path do not.
    assert str(refused.value).endswith("could not parse index string NoSuchIndex")
    assert ".cpp" not in str(refused.value) and "faiss::" not in str(refused.value)
    with pytest.raises(InvalidInputError, match="multiple of the number of subquantizers"):
        validate_factory("IVF8,PQ7", 32)
    with pytest.raises(InvalidInputError, match="IVF"):
        validate_factory("HNSW32", 32)
    vectors = unit_vectors(1200, 32)
    ids = np.arange(1, 1201, dtype=np.int64)
    policy = IndexPolicy(exact_max=100, factory="PCA16,IVF8,Flat")
    index = VectorIndex.build(ids, vectors, policy, CPU, last_seq=1)
    assert index.spec.kind == "factory" and index.spec.factory == "PCA16,IVF8,Flat"
    index.remove(ids[:100])
    _, found = index.search(vectors[:50], 5)
    assert not np.isin(found, ids[:100]).any()
    _, everywhere = index.search(vectors[:50], 5, exhaustive=True, allowed_ids=ids[::2])
    assert np.isin(everywhere, ids[100::2]).all()


def test_serialized_index_loads_back_identical(unit_vectors: UnitVectors) -> None:
    vectors, queries = unit_vectors(3000, 32), unit_vectors(10, 32)
    ids = np.arange(1, 3001, dtype=np.int64)
    for policy in (IndexPolicy(exact_max=10_000), IndexPolicy(exact_max=0)):
        index = VectorIndex.build(ids, vectors, policy, CPU, last_seq=42)
        payload, spec, seq = index.serialize()
        loaded = VectorIndex.deserialize(payload, spec, CPU, last_seq=seq)
        assert (loaded.spec, loaded.last_seq, loaded.ntotal) == (index.spec, 42, 3000)
        for a, b in zip(index.search(queries, 10), loaded.search(queries, 10), strict=True):
            np.testing.assert_array_equal(a, b)


def test_index_file_roundtrip_and_corruption_detection(tmp_path: Path) -> None:
    path = tmp_path / "collection-1" / "m.vdx"
    payload = np.random.default_rng(0).integers(0, 256, 10_000).astype(np.uint8)
    write_snapshot(path, {"last_seq": 7, "model": "m"}, payload)
    header, loaded = read_snapshot(path)
    assert header["last_seq"] == 7 and header["payload_size"] == payload.size
    np.testing.assert_array_equal(loaded, payload)
    assert not list(path.parent.glob("*.tmp"))  # the temporary file was renamed, not left
    good = path.read_bytes()
    assert good.startswith(MAGIC)

    def corrupted(data: bytes) -> None:
        path.write_bytes(data)
        with pytest.raises(IndexCorruptError):
            read_snapshot(path)

    corrupted(good[: len(good) // 2])  # truncated
    corrupted(good[:10])
    for position in (len(MAGIC) + 12, len(good) // 2, len(good) - 1):  # header, payload, digest
        flipped = bytearray(good)
        flipped[position] ^= 0x10
        corrupted(bytes(flipped))
    corrupted(b"NOTVIZDX" + good[8:])
    assert move_aside(path, "test") == path.with_name("m.vdx.corrupt")
    assert not path.exists() and path.with_name("m.vdx.corrupt").exists()


def test_read_write_lock_lets_readers_share_and_writers_exclude() -> None:
    lock = ReadWriteLock()
    inside: list[str] = []
    both_reading = threading.Barrier(2, timeout=5)

    def reader() -> None:
        with lock.read():
            inside.append("r")
            both_reading.wait()  # only passes if two readers are inside together

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in readers:
        thread.start()
    for thread in readers:
        thread.join()
    assert inside == ["r", "r"]

    def late_reader() -> None:
        with lock.read():
            inside.append("late")

    with lock.write():
        blocked = threading.Thread(target=late_reader)
        blocked.start()
        blocked.join(timeout=0.2)
        assert blocked.is_alive() and inside == ["r", "r"]  # readers wait for the writer
    blocked.join(timeout=5)
    assert inside == ["r", "r", "late"]


@pytest.mark.gpu
@pytest.mark.skipif(
    not gpu_available(), reason="FAISS has no GPU support here or sees no GPU (CPU-only run)"
)
def test_gpu_backend_matches_the_cpu(unit_vectors: UnitVectors) -> None:
    gpu = IndexBackend.detect("auto")
    assert gpu.use_gpu
    vectors, queries = unit_vectors(5000, 64), unit_vectors(20, 64)
    ids = np.arange(1, 5001, dtype=np.int64)
    for policy in (IndexPolicy(exact_max=10_000), IndexPolicy(exact_max=0)):
        on_gpu = VectorIndex.build(ids, vectors, policy, gpu, last_seq=1)
        on_cpu = VectorIndex.build(ids, vectors, policy, CPU, last_seq=1)
        assert on_gpu.device == "gpu"
        gpu_scores, gpu_ids = on_gpu.search(queries, 10)
        cpu_scores, cpu_ids = on_cpu.search(queries, 10)
        assert recall_at(gpu_ids, cpu_ids) >= 0.99
        np.testing.assert_allclose(np.sort(gpu_scores), np.sort(cpu_scores), atol=1e-3)
        on_gpu.remove(ids[:2500])
        on_gpu.add(np.array([9001]), queries[:1])
        _, found = on_gpu.search(queries[:1], 1)
        assert found[0, 0] == 9001
        _, found = on_gpu.search(vectors[:100], 5)
        assert not np.isin(found, ids[:2500]).any()


def test_factory_index_stays_exact_until_it_can_be_trained() -> None:
    policy = IndexPolicy(exact_max=10, factory="OPQ8,IVF64,PQ8")
    assert factory_min_count("OPQ8,IVF64,PQ8") == 39 * 64
    assert policy.kind_for(100) == "flat"
    assert policy.kind_for(39 * 64) == "factory"


def test_absurd_factory_list_counts_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="at most"):
        validate_factory("IVF99999999,Flat", 32)
