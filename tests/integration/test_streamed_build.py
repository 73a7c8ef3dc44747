"""Index builds read the catalog a batch at a time: the builder never holds more than one batch
(plus its training sample), and a build read in small batches is the build read in one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ImageFactory, UnitVectors
from tests.integration.test_compressed_store import DIM as COMPRESSED_DIM
from tests.integration.test_compressed_store import assert_reranked_and_consistent
from tests.integration.test_index_store import Writer
from tests.unit.test_index import _normalise, brute_force, clustered, recall_at
from vizdex.search.catalog import Catalog
from vizdex.search.index import IndexBackend, IndexPolicy, VectorIndex, compressed_nlist
from vizdex.search.index_store import IndexStore
from vizdex.search.settings import IndexSettings, SearchSettings
from vizdex.search.vector_file import VectorFilePlace
from vizdex.search.vector_source import ArraySource, Batch

CPU = IndexBackend(use_gpu=False)
BATCH = 700


class CountingSource:
    """An injected reader: hands out an array's rows in batches and records what it gave."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, batch_size: int) -> None:
        self.inner = ArraySource(ids, vectors, batch_size)
        self.largest = 0
        self.passes = 0

    @property
    def count(self) -> int:
        return self.inner.count

    def batches(self) -> Iterator[Batch]:
        self.passes += 1
        for ids, vectors in self.inner.batches():
            self.largest = max(self.largest, len(ids))
            yield ids, vectors


@pytest.fixture(scope="module")
def clustered_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    centers = _normalise(rng.standard_normal((1200, 64)))
    vectors = clustered(rng, 11_000, centers, noise=0.8)
    queries = clustered(rng, 200, centers, noise=0.8)
    return np.arange(1, 11_001, dtype=np.int64) * 2, vectors, queries


@pytest.mark.parametrize("compressed", [False, True], ids=["ivf-flat", "ivf-pq"])
def test_a_build_read_in_small_batches_is_the_build_read_at_once(
    clustered_data: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path, compressed: bool
) -> None:
    ids, vectors, queries = clustered_data

    def policy(name: str) -> IndexPolicy:
        if not compressed:
            return IndexPolicy(exact_max=0)
        place = VectorFilePlace(tmp_path / name, 1, "m")
        return IndexPolicy(exact_max=0, compress_min=0, rerank=10, vector_place=place)

    whole = VectorIndex.build(ids, vectors, policy("whole"), CPU, last_seq=3)
    source = CountingSource(ids, vectors, BATCH)
    streamed = VectorIndex.build_from(source, policy("streamed"), CPU, last_seq=3, dim=64)

    assert source.passes == 2  # one for the training sample, one to add every vector
    assert source.largest <= BATCH
    assert streamed.spec == whole.spec  # same lists, same tuned nprobe, same measured margin
    assert streamed.spec.kind == ("ivfpq" if compressed else "ivf")
    if compressed:
        assert streamed.spec.nlist == compressed_nlist(len(ids))
    np.testing.assert_array_equal(streamed.ids(), whole.ids())  # same lists, same order
    scores, found = streamed.search(queries, 10)
    whole_scores, whole_found = whole.search(queries, 10)
    np.testing.assert_array_equal(found, whole_found)
    np.testing.assert_array_equal(scores, whole_scores)
    # The recall the build was tuned for, on the kind of queries it was tuned with (the
    # collection's own vectors; new photos come out a little lower).
    own = vectors[::55]
    _, truth = brute_force(own, vectors, ids, 10)
    assert recall_at(streamed.search(own, 10)[1], truth) >= 0.95


def test_a_source_shorter_than_its_count_still_builds_from_what_it_has(
    clustered_data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """Rows deleted between counting and reading: the sample and the index take what is left."""
    ids, vectors, _ = clustered_data

    class Shrunk(CountingSource):
        @property
        def count(self) -> int:
            return self.inner.count + 500

    index = VectorIndex.build_from(
        Shrunk(ids, vectors, BATCH), IndexPolicy(exact_max=0), CPU, last_seq=1, dim=64
    )
    assert index.ntotal == len(ids)
    np.testing.assert_array_equal(np.sort(index.ids()), ids)


@pytest.fixture
def small_batches(search_settings: SearchSettings) -> IndexSettings:
    return replace(
        search_settings.index,
        snapshot_every=1_000_000,
        device="cpu",
        build_batch=BATCH,
        compress_min=1,  # compressed as soon as PQ can be trained
    )


def test_the_store_builds_and_retrains_from_the_catalog_one_batch_at_a_time(
    catalog: Catalog,
    small_batches: IndexSettings,
    unit_vectors: UnitVectors,
    new_image: ImageFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collection = catalog.create_collection("photos", ["m"], exact_max=0)
    writer = Writer(catalog, collection, unit_vectors, new_image, dim=COMPRESSED_DIM)
    largest = [0]
    asked: list[int] = []
    real = Catalog.iter_embeddings

    def counting(
        self: Catalog, collection_id: int, model: str, *, upto_seq: int, batch_size: int = 20_000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        asked.append(batch_size)
        for batch in real(self, collection_id, model, upto_seq=upto_seq, batch_size=batch_size):
            largest[0] = max(largest[0], len(batch[0]))
            yield batch

    monkeypatch.setattr(Catalog, "iter_embeddings", counting)
    store = IndexStore(catalog, small_batches)
    try:
        writer.add(3000, dim=64)
        store.sync(collection)
        assert store.info(collection, "m").kind == "ivf"  # too few to train PQ codebooks
        writer.add(7500, dim=64)  # past PQ's minimum and twice the trained size: a retrain
        store.sync(collection)
        store.wait_idle()
        info = store.info(collection, "m")
        assert (info.kind, info.count) == ("ivfpq", 10_500)
        builds_asked, builds_largest = list(asked), largest[0]
        assert_reranked_and_consistent(store, catalog, collection)  # reads all rows at once
    finally:
        store.close(snapshot=False)
    assert builds_asked and max(builds_asked) <= BATCH  # every read the builds made: one batch
    assert 0 < builds_largest <= BATCH  # and got at most that many rows at a time
