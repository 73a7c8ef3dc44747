"""The vector-store contract: the same searches against local FAISS and Milvus (milvus-lite, a real
Milvus in this process) on the same catalog and vectors.

FAISS flat is exact, so it is the reference: Milvus FLAT must give the same ids and scores, HNSW
must reach the recall the issue asks for, and filters, paging, min_score, deletes, re-embeds and
metadata changes must agree.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from pymilvus import DataType, MilvusClient, MilvusException

from tests.support.milvus import (
    DIM,
    MODEL,
    items,
    milvus_device,
    milvus_server,
    open_pair,
    unit_rows,
)
from tests.support.postgres import DATABASES, database_url_for
from vizdex.core.errors import InvalidInputError
from vizdex.search import milvus_store
from vizdex.search.catalog import Catalog
from vizdex.search.collections_service import CollectionsService
from vizdex.search.duplicates import DuplicateOptions
from vizdex.search.errors import IndexTypeRefusedError, PageTooDeepError
from vizdex.search.milvus_store import (
    FIELD_VECTOR,
    Leadership,
    MilvusVectorStore,
    filter_expression,
    index_params,
    segment_rows,
)
from vizdex.search.records import ImageFilter
from vizdex.search.service import SearchOptions, SearchService
from vizdex.search.settings import CatalogSettings, SearchSettings
from vizdex.search.vector_store import FaissVectorStore

COUNT = 5000


@dataclass
class Pair:
    """Two services on one catalog: local FAISS and Milvus."""

    faiss: SearchService
    milvus: SearchService
    store: MilvusVectorStore
    split: object  # created_at of the second batch's first image

    def both(
        self, query: np.ndarray, options: SearchOptions, collection: str = "c"
    ) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        a = self.faiss.search_vector(collection, query, model=MODEL, options=options)
        b = self.milvus.search_vector(collection, query, model=MODEL, options=options)
        return [(h.image_id, h.score) for h in a.hits], [(h.image_id, h.score) for h in b.hits]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    data = tmp_path_factory.mktemp("stores")
    faiss, milvus = open_pair(SearchSettings.for_data_dir(data), data / "vectors.db", "flat")
    faiss.catalog.create_collection("c", [MODEL])
    vectors = unit_rows(COUNT, seed=1)
    faiss.add_images("c", items(vectors[: COUNT // 2], 0))
    time.sleep(0.01)  # the second half is created strictly later
    added = faiss.add_images("c", items(vectors[COUNT // 2 :], COUNT // 2))
    split = faiss.catalog.get_image(faiss.get_collection("c").id, added[0].id).created_at
    assert isinstance(milvus.store, MilvusVectorStore)
    yield Pair(faiss, milvus, milvus.store, split)
    milvus.close()
    faiss.close()


def queries(count: int, seed: int = 7) -> np.ndarray:
    return unit_rows(count, seed)


def assert_same(faiss_hits: list[tuple[int, float]], milvus_hits: list[tuple[int, float]]) -> None:
    assert [i for i, _ in milvus_hits] == [i for i, _ in faiss_hits]
    np.testing.assert_allclose(
        [s for _, s in milvus_hits], [s for _, s in faiss_hits], atol=1e-4, rtol=0
    )


def test_the_default_store_is_faiss(pair: Pair) -> None:
    assert isinstance(pair.faiss.store, FaissVectorStore)
    assert pair.faiss.writer_indexes is pair.faiss.indexes
    assert pair.milvus.writer_indexes is None  # Milvus's follower applies the writes


def test_milvus_flat_gives_faiss_flat_ids_and_scores(pair: Pair) -> None:
    for query in queries(20):
        assert_same(*pair.both(query, SearchOptions(k=10)))
    record = pair.milvus.get_collection("c")
    _, count, _ = pair.faiss.catalog.embedding_summary(record.id, MODEL)
    assert pair.store.count(record, MODEL) == count >= COUNT
    described = CollectionsService(pair.milvus).describe("c").index_details
    assert described is not None
    (info,) = described
    assert (info.kind, info.count, info.dim) == ("milvus-flat", count, DIM)
    assert info.device == milvus_device() and info.last_seq == pair.faiss.collection_seq("c")


@pytest.mark.parametrize(
    "options",
    [
        SearchOptions(k=10, offset=30),
        SearchOptions(k=100),
        SearchOptions(k=50, min_score=0.35),
        SearchOptions(k=1000, min_score=0.5),
    ],
    ids=["offset", "k100", "min_score", "min_score_cuts_short"],
)
def test_paging_and_min_score_agree(pair: Pair, options: SearchOptions) -> None:
    for query in queries(5, seed=11):
        faiss_hits, milvus_hits = pair.both(query, options)
        assert_same(faiss_hits, milvus_hits)
        if options.min_score is not None:
            assert all(score >= options.min_score for _, score in milvus_hits)


def test_offset_is_milvus_own_and_a_page_past_its_limit_is_refused(pair: Pair) -> None:
    """The offset goes to Milvus: a page deep in the list reads only its own hits' rows (not
    offset + k of them) and is still FAISS's page; offset + k past Milvus's 16,384 is a 422."""
    record = pair.milvus.get_collection("c")
    for query in queries(3, seed=29):
        deep = SearchOptions(k=10, offset=3000)
        ranked = pair.store.rank(record, MODEL, query, 10, deep, frozenset(), skip=3000)
        assert len(ranked.hits) == 10 and set(ranked.images) == {i for i, _ in ranked.hits}
        assert_same(*pair.both(query, deep))
        last = SearchOptions(k=10, offset=COUNT - 4, filters=ImageFilter(metadata={"n": -1}))
        assert pair.both(query, last) == ([], [])
    # Past VIZDEX_SEARCH_MAX_WINDOW (10,000 by default, settable higher) Milvus's own limit.
    query, nothing = queries(1)[0], frozenset[int]()
    edge = pair.store.rank(record, MODEL, query, 1000, SearchOptions(k=1000), nothing, skip=15_384)
    assert edge.hits == []  # 5,003 vectors: nothing that deep, but a page Milvus may answer
    with pytest.raises(PageTooDeepError) as refused:
        pair.store.rank(record, MODEL, query, 1000, SearchOptions(k=1000), nothing, skip=15_385)
    assert refused.value.code == "page_too_deep" and refused.value.details["max_depth"] == 16_384
    # FAISS has no such limit: the same page there is simply empty.
    faiss = pair.faiss.store.rank(record, MODEL, query, 1000, SearchOptions(), nothing, skip=15_385)
    assert faiss.hits == []


@pytest.mark.parametrize(
    ("filters", "k", "expected"),
    [
        (ImageFilter(metadata={"color": "red"}), 10, 10),
        (ImageFilter(metadata={"color": "red", "odd": True}), 25, 25),
        (ImageFilter(metadata={"rare tag": "yes"}), 10, 10),  # 16 match: the page is full
        (ImageFilter(metadata={"rare tag": "yes"}), 40, 16),  # all 16, no more
        (ImageFilter(metadata={"n": 4321}), 10, 1),
        (ImageFilter(metadata={"color": "purple"}), 10, 0),
    ],
)
def test_filtered_searches_are_exact_with_k_hits_when_k_match(
    pair: Pair, filters: ImageFilter, k: int, expected: int
) -> None:
    for query in queries(3, seed=13):
        faiss_hits, milvus_hits = pair.both(query, SearchOptions(k=k, filters=filters))
        assert len(milvus_hits) == expected
        assert_same(faiss_hits, milvus_hits)


def test_created_time_filters_are_pushed_down_and_agree(pair: Pair) -> None:
    after = ImageFilter(created_after=pair.split)  # type: ignore[arg-type]
    before = ImageFilter(created_before=pair.split, metadata={"color": "blue"})  # type: ignore[arg-type]
    for filters in (after, before):
        for query in queries(3, seed=17):
            faiss_hits, milvus_hits = pair.both(query, SearchOptions(k=20, filters=filters))
            assert len(milvus_hits) == 20
            assert_same(faiss_hits, milvus_hits)
    first_half = {i for i, _ in pair.both(queries(1)[0], SearchOptions(k=200, filters=before))[1]}
    assert max(first_half) < min(
        i for i, _ in pair.both(queries(1)[0], SearchOptions(k=200, filters=after))[1]
    )


def test_filter_expression_quotes_keys_and_values() -> None:
    expression = filter_expression(
        ImageFilter(metadata={"a b": 'say "hi"', "flag": False, "x": 1.5}), frozenset({3, 1})
    )
    assert expression == (
        'meta["a b"] == "say \\"hi\\"" and meta["flag"] == false and meta["x"] == 1.5 '
        "and id not in [1, 3]"
    )


def test_ivf_lists_are_sized_for_one_segment_not_the_whole_collection() -> None:
    """Milvus builds IVF per sealed segment (sealed at ~120 MB: 61,440 vectors of 512 float32):
    past one segment the list count stops growing, or each segment's lists would be nearly
    empty; below it, never fewer than 39 vectors per list."""
    sealed = segment_rows(512)
    assert sealed == 61_440
    assert index_params("IVF_FLAT", 512, 10_000)["nlist"] == 256  # 10,000 / 39, not 4·√n = 400
    assert index_params("IVF_FLAT", 512, 1_000)["nlist"] == 25  # 1,000 / 39
    assert index_params("IVF_FLAT", 512, sealed)["nlist"] == round(4 * sealed**0.5) == 991
    for count in (2 * sealed, 10_000_000, 10**9):
        assert index_params("IVF_FLAT", 512, count)["nlist"] == 991
        assert index_params("GPU_IVF_PQ", 512, count)["nlist"] == 991
    assert index_params("IVF_FLAT", 128, 10_000_000)["nlist"] == round(4 * (4 * sealed) ** 0.5)


def test_similar_excludes_the_image_itself(pair: Pair) -> None:
    record = pair.milvus.get_collection("c")
    image_id = next(iter(pair.faiss.catalog.filter_image_ids(record.id, ImageFilter(), limit=1)))
    a = pair.faiss.search_similar("c", image_id, model=MODEL, options=SearchOptions(k=10))
    b = pair.milvus.search_similar("c", image_id, model=MODEL, options=SearchOptions(k=10))
    assert image_id not in {h.image_id for h in b.hits}
    assert_same([(h.image_id, h.score) for h in a.hits], [(h.image_id, h.score) for h in b.hits])


def test_deletes_reembeds_reingest_and_metadata_changes_agree(pair: Pair) -> None:
    catalog = pair.faiss.catalog
    record = catalog.create_collection("d", [MODEL])
    first = pair.faiss.add_images("d", items(unit_rows(2000, seed=31), 0))
    pair.milvus.catch_up("d", pair.faiss.collection_seq("d"))  # Milvus has them all first
    rng = np.random.default_rng(3)
    ids = np.asarray([a.id for a in first])
    gone = [int(i) for i in rng.choice(ids, size=300, replace=False)]
    pair.faiss.delete_images("d", gone)
    kept = sorted(set(ids.tolist()) - set(gone))
    moved = [int(i) for i in rng.choice(kept, size=100, replace=False)]
    catalog.put_embeddings(record.id, MODEL, moved, unit_rows(len(moved), seed=5))
    back = pair.faiss.add_images("d", items(unit_rows(2, seed=31), 0))  # deleted ones again?
    back += pair.faiss.add_images("d", items(unit_rows(50, seed=9), COUNT + 1000))
    # A metadata change takes a sequence number: Milvus follows it whichever process made it
    # (the one configured with FAISS here, the one with Milvus there).
    pair.faiss.update_metadata("d", moved[0], {"color": "purple"})
    pair.milvus.update_metadata("d", moved[1], {"color": "purple"})

    for query in [*queries(10, seed=19), *unit_rows(3, seed=5)]:  # the last hit re-embeds
        assert_same(*pair.both(query, SearchOptions(k=10), "d"))
    purple = ImageFilter(metadata={"color": "purple"})
    faiss_hits, milvus_hits = pair.both(queries(1)[0], SearchOptions(k=10, filters=purple), "d")
    assert sorted(i for i, _ in milvus_hits) == sorted(moved[:2])  # both changes seen
    assert_same(faiss_hits, milvus_hits)
    expected = sorted(set(kept) | {a.id for a in back})
    assert pair.store.ids(record, MODEL).tolist() == expected
    assert sorted(pair.faiss.indexes.ids(record, MODEL).tolist()) == expected
    stored = pair.store.vectors(record, MODEL, moved[:5])
    _, truth = catalog.get_vectors(record.id, MODEL, moved[:5])
    np.testing.assert_allclose(np.stack([stored[i] for i in moved[:5]]), truth, atol=1e-6)


def test_duplicate_scans_use_milvus_range_search_and_find_faiss_groups(pair: Pair) -> None:
    """40 pictures with 1 to 4 near-copies each (cosine ~0.985 to their original) among 1,500
    others: Milvus's range search (``radius``) gives the groups the FAISS range search gives,
    and the Milvus process builds no local FAISS index for it."""
    catalog = pair.faiss.catalog
    record = catalog.create_collection("dups", [MODEL])
    rng = np.random.default_rng(81)
    bases = unit_rows(40, seed=82)
    copies = [
        base + 0.03 * rng.standard_normal(DIM).astype(np.float32)
        for number, base in enumerate(bases)
        for _ in range(1 + number % 4)
    ]
    vectors = np.concatenate([bases, np.stack(copies), unit_rows(1500, seed=83)])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    pair.faiss.add_images("dups", items(vectors, 20_000))
    options = DuplicateOptions(threshold=0.95, model=MODEL)
    expected = pair.faiss.duplicates.scan("dups", options)
    found = pair.milvus.duplicates.scan("dups", options)
    assert len(expected.groups) == 40
    assert [g.image_ids for g in found.groups] == [g.image_ids for g in expected.groups]
    for mine, theirs in zip(found.groups, expected.groups, strict=True):
        np.testing.assert_allclose(mine.similarities, theirs.similarities, atol=1e-4)
    assert (found.scanned, found.pairs) == (expected.scanned, expected.pairs)
    assert record.id not in pair.milvus.indexes.applied_seqs()  # no local index was built
    assert record.id in pair.faiss.indexes.applied_seqs()


def test_read_your_writes_reaches_the_milvus_watermark(pair: Pair) -> None:
    added = pair.faiss.add_images("c", items(unit_rows(3, seed=21), COUNT + 5000))
    seq = pair.faiss.collection_seq("c")
    pair.milvus.catch_up("c", seq)
    record = pair.milvus.get_collection("c")
    assert {r.name: applied for r, applied in pair.milvus.lag()}["c"] == seq
    assert set(pair.store.ids(record, MODEL).tolist()) >= {a.id for a in added}


def test_hnsw_reaches_the_recall_asked_for(pair: Pair) -> None:
    record = pair.milvus.get_collection("c")
    exact = [pair.faiss.search_vector("c", q, model=MODEL) for q in queries(50, seed=23)]
    pair.store.reindex(record, "HNSW")
    name = pair.store.name_of(record.id, MODEL)
    described = pair.store.client.describe_index(name, FIELD_VECTOR)
    assert described["index_type"] == "HNSW"
    if milvus_server() is not None:  # a server reports its build over every (flushed) row
        assert int(described["indexed_rows"]) == int(described["total_rows"]) >= COUNT
    found = 0
    for query, truth in zip(queries(50, seed=23), exact, strict=True):
        result = pair.milvus.search_vector("c", query, model=MODEL)
        assert result.approximate
        found += len({h.image_id for h in result.hits} & {h.image_id for h in truth.hits})
    assert found / (50 * 10) >= 0.95
    pair.store.reindex(record, "FLAT")  # later tests compare exact results again


def test_gpu_index_types_are_refused_where_they_cannot_be_built(pair: Pair, tmp_path: Path) -> None:
    """On milvus-lite before anything is created (it would accept the type and search without
    an index); on a Milvus server built without GPUs when a probe collection is refused, before
    the collection being rebuilt is dropped. Either way the collection keeps its FLAT index."""
    record = pair.milvus.get_collection("c")
    # A CPU-built server refuses GPU_CAGRA at creation, and takes GPU_IVF_PQ but never builds
    # it (its probe build stays at 0 rows indexed).
    server_refusals = {
        "GPU_CAGRA": "cannot build a GPU_CAGRA index",
        "GPU_IVF_PQ": "GPU_IVF_PQ index of .*_probe_gpu_ivf_pq over 0 of 2048 rows",
    }
    for index_type, server_refusal in server_refusals.items():
        refusal = "milvus-lite cannot build" if milvus_server() is None else server_refusal
        with pytest.raises(IndexTypeRefusedError, match=refusal):
            pair.store.reindex(record, index_type)
    assert_same(*pair.both(queries(1)[0], SearchOptions(k=10)))  # still there, still FLAT
    name = pair.store.name_of(record.id, MODEL)
    assert pair.store.client.describe_index(name, FIELD_VECTOR)["index_type"] == "FLAT"
    if milvus_server() is not None:  # the up-front refusal is lite's alone
        assert pair.store.check_index_type("gpu_cagra") == "GPU_CAGRA"
        return
    settings = SearchSettings.for_data_dir(tmp_path)
    gpu = replace(settings.index, vector_store=str(tmp_path / "v.db"), milvus_index="gpu_cagra")
    with pytest.raises(IndexTypeRefusedError) as refused:
        SearchService.open(replace(settings, index=gpu), {})
    assert refused.value.code == "index_type_refused"


def _unbuilt(client: MilvusClient, index_type: str) -> None:
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field(FIELD_VECTOR, DataType.FLOAT_VECTOR, dim=DIM)
    params = client.prepare_index_params()
    params.add_index(field_name=FIELD_VECTOR, index_type=index_type, metric_type="IP")
    client.create_collection("unbuilt", schema=schema, index_params=params)


def test_an_index_milvus_did_not_build_is_detected(pair: Pair) -> None:
    """What the up-front refusal guards against: lite takes GPU_CAGRA and describe_index reports
    it built, yet lite cannot build it and searches by brute force; the check after a build
    (flush and load, when lite really builds) says so instead of searching without it. A
    Milvus server without GPUs refuses the type at creation instead."""
    client = pair.store.client
    if client.has_collection("unbuilt"):  # left by a run stopped half-way (a server keeps it)
        client.drop_collection("unbuilt")
    if milvus_server() is not None:
        with pytest.raises(MilvusException, match="invalid index type: GPU_CAGRA"):
            _unbuilt(client, "GPU_CAGRA")
        # It leaves the collection without any index (vizdex drops what a refused build made).
        assert client.has_collection("unbuilt") and not client.list_indexes("unbuilt")
        client.drop_collection("unbuilt")
        return
    _unbuilt(client, "GPU_CAGRA")
    try:
        client.insert(
            "unbuilt",
            [{"id": i, FIELD_VECTOR: v.tolist()} for i, v in enumerate(unit_rows(50, seed=2))],
        )
        before = client.describe_index("unbuilt", FIELD_VECTOR)
        assert before["index_type"] == "GPU_CAGRA" and before["state"] == "Finished"  # it says
        with pytest.raises(IndexTypeRefusedError, match="could not build the GPU_CAGRA"):
            pair.store.verify_index("unbuilt", "GPU_CAGRA", wait_s=1.0)
        with pytest.raises(IndexTypeRefusedError, match="has no HNSW index"):
            pair.store.verify_index("unbuilt", "HNSW", wait_s=0.0)
    finally:
        client.drop_collection("unbuilt")


def test_an_unknown_vector_store_is_refused(tmp_path: Path) -> None:
    settings = SearchSettings.for_data_dir(tmp_path)
    bad = replace(settings, index=replace(settings.index, vector_store="elastic://x"))
    with pytest.raises(InvalidInputError, match="VIZDEX_VECTOR_STORE"):
        SearchService.open(bad, {})


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, data_dir: Path) -> str:
    return database_url_for(request, data_dir)


def test_one_follower_at_a_time_and_a_deleted_collection_leaves_milvus(
    search_settings: SearchSettings, data_dir: Path
) -> None:
    """One follower at a time (PostgreSQL's advisory lock, SQLite's lease); the other still
    searches, and reads the watermark the leader wrote. Deleting the collection drops its Milvus
    collections; the leader closing lets the other follow (a lease is let go, not waited out)."""
    lite = data_dir / "shared.db"
    faiss, first = open_pair(search_settings, lite, "flat")
    spare, second = open_pair(search_settings, lite, "flat")
    spare.close()
    services = [second, first, faiss]
    try:
        faiss.catalog.create_collection("c", [MODEL])
        faiss.add_images("c", items(unit_rows(40, seed=4), 0))
        seq = faiss.collection_seq("c")
        first.catch_up("c", seq)  # first leads from here on
        a, b = first.store, second.store
        assert isinstance(a, MilvusVectorStore) and isinstance(b, MilvusVectorStore)
        record = faiss.get_collection("c")
        term = a.leader_term
        assert not b.catch_up(record) and b.leader_term is None
        assert a.leader_term == term  # the leader was not fenced by the other's try
        faiss.add_images("c", items(unit_rows(5, seed=6), 100))
        assert [applied for _, applied in second.lag()] == [seq]  # the leader's watermark
        query = unit_rows(1, seed=8)[0]
        hits = second.search_vector("c", query, model=MODEL, options=SearchOptions(k=45))
        assert len(hits.hits) == 40  # the leader has not applied the 5 yet
        first.delete_collection("c")
        assert not a.client.has_collection(a.name_of(record.id, MODEL))
        services.remove(first)
        first.close()  # the leader goes: its lock with it, and the second takes over
        faiss.catalog.create_collection("e", [MODEL])
        faiss.add_images("e", items(unit_rows(7, seed=12), 0))
        time.sleep(1.1)  # a process that lost the race asks again after a second
        second.catch_up("e", faiss.collection_seq("e"))  # NotCaughtUpError if it cannot lead
        query = unit_rows(1, seed=8)[0]
        hits = second.search_vector("e", query, model=MODEL, options=SearchOptions(k=10))
        assert len(hits.hits) == 7
    finally:
        for service in services:
            service.close()


def test_fusion_over_two_models_agrees(pair: Pair) -> None:
    """Reciprocal-rank fusion ranks each model's list from the store: the same on both."""
    catalog = pair.faiss.catalog
    catalog.create_collection("two", [MODEL, "n"])
    first, second = unit_rows(300, seed=41), unit_rows(300, seed=42)
    made = [
        replace(item, vectors={MODEL: first[i], "n": second[i]})
        for i, item in enumerate(items(first, 0))
    ]
    added = pair.faiss.add_images("two", made)
    options = SearchOptions(k=15, filters=ImageFilter(metadata={"color": "green"}))
    for image in added[:3]:
        a = pair.faiss.search_similar("two", image.id, fuse=True, options=options)
        b = pair.milvus.search_similar("two", image.id, fuse=True, options=options)
        assert b.fused and b.model == f"{MODEL}+n" and len(b.hits) == 15
        assert [h.image_id for h in b.hits] == [h.image_id for h in a.hits]
        for x, y in zip(a.hits, b.hits, strict=True):
            assert x.scores.keys() == y.scores.keys()
            np.testing.assert_allclose(list(y.scores.values()), list(x.scores.values()), atol=1e-4)


def test_a_follower_whose_session_died_is_no_longer_the_leader(postgres_url: str) -> None:
    """The PostgreSQL lock lives as long as its session: a leader whose session was killed
    must not go on following beside the process that took the lock over."""
    catalog = Catalog.open(CatalogSettings(postgres_url))
    first, second = Leadership(catalog, "target"), Leadership(catalog, "target")
    try:
        assert first.held() and not second.held()
        with catalog.engine.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND pid <> pg_backend_pid()"
                )
            )
            connection.commit()
        time.sleep(1.1)  # a process that lost the race asks again after a second
        assert second.held()  # the lock was free again: the second takes it
        assert not first.held()  # the first finds its session gone and the lock taken
        second.release()
        time.sleep(1.1)
        assert first.held()
    finally:
        first.release()
        second.release()
        catalog.close()


class SlowBuild:
    """The real Milvus client, except that describe_index reports the vector index as built
    over ``step`` more rows on each call until ``stop`` (as a large build on a server does)."""

    def __init__(self, client: MilvusClient, *, step: int, stop: int) -> None:
        self._client, self._step, self._stop = client, step, stop
        self.calls = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)

    def describe_index(self, *args: object, **kwargs: object) -> dict[str, object]:
        described = dict(self._client.describe_index(*args, **kwargs))
        self.calls += 1
        described["indexed_rows"] = min(self._stop, self._step * self.calls)
        return described


def test_a_rebuild_waits_for_its_index_without_holding_up_following(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index wait of ``vizdex reindex`` (43 minutes for 1M HNSW vectors here) comes after
    the follow lock is released: the process goes on following the catalog meanwhile."""
    store = pair.store
    collection = pair.milvus.get_collection("c")
    pair.milvus.search_vector("c", queries(1)[0], model=MODEL, options=SearchOptions(k=1))
    name = store.name_of(collection.id, MODEL)
    real = store._client
    total = int(real.describe_index(name, FIELD_VECTOR)["total_rows"])
    monkeypatch.setattr(milvus_store, "INDEX_STALL_S", 2.0)  # polls every 0.5 s
    slow = SlowBuild(real, step=total // 16 + 1, stop=total)  # ~8 s of reported progress
    store._client = slow
    failures: list[BaseException] = []

    def rebuild() -> None:
        try:
            store.reindex(collection)
        except BaseException as error:  # reported below
            failures.append(error)

    thread = threading.Thread(target=rebuild)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while slow.calls < 4 and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert thread.is_alive() and slow.calls >= 4  # waiting for its index
        assert store._follow_lock.acquire(timeout=1.0)  # the wait does not hold it
        store._follow_lock.release()
        assert thread.is_alive()
        thread.join(120)
        assert not failures and not thread.is_alive()
        assert int(str(real.describe_index(name, FIELD_VECTOR)["total_rows"])) == total
    finally:
        thread.join(120)
        store._client = real


def test_a_rebuild_waits_for_an_index_as_long_as_milvus_keeps_building_it(pair: Pair) -> None:
    """A rebuild's index wait ends on a stall, not on a clock: 1M HNSW vectors take ~43 minutes,
    and a fixed 10-minute wait refused an index that was still being built."""
    store = pair.store
    pair.milvus.search_vector("c", queries(1)[0], model=MODEL, options=SearchOptions(k=1))
    name = store.name_of(pair.milvus.get_collection("c").id, MODEL)  # caught up: it exists
    real = store._client
    described = real.describe_index(name, FIELD_VECTOR)
    kind, total = str(described["index_type"]), int(described["total_rows"])
    assert total >= COUNT
    try:
        # Past the wait's length in all, but a step of progress at each look: waited for.
        slow = SlowBuild(real, step=total // 12 + 1, stop=total)
        store._client = slow
        found = store.verify_index(name, kind, wait_s=2.0, stall=True)
        assert slow.calls >= 12 and int(str(found["indexed_rows"])) == total
        # The same build without ``stall`` is refused when the wait's length has passed.
        store._client = SlowBuild(real, step=total // 12 + 1, stop=total)
        with pytest.raises(IndexTypeRefusedError, match=r"rows only \(after 2 s\)"):
            store.verify_index(name, kind, wait_s=2.0)
        # A build that stops short is refused once it has made no progress for the wait.
        stalled = SlowBuild(real, step=total // 4, stop=total // 2)
        store._client = stalled
        stuck = f"over {total // 2} of {total} rows only \\(without progress for 1 s\\)"
        with pytest.raises(IndexTypeRefusedError, match=stuck):
            store.verify_index(name, kind, wait_s=1.0, stall=True)
        assert stalled.calls >= 3
    finally:
        store._client = real
