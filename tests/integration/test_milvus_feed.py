"""What the Milvus follower takes from the catalog besides vectors: removed models and deleted
collections leave Milvus (and are not brought back by a batch in flight), metadata changes come
through the change feed whichever store the writing process uses, and a follower overtaken by
another (fencing token) cannot move the watermark back or leave its late batch standing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from tests.support.milvus import MODEL, items, open_pair, unit_rows
from tests.support.postgres import DATABASES, database_url_for
from vizdex.search.errors import FollowerFencedError
from vizdex.search.milvus_store import MilvusVectorStore
from vizdex.search.records import ImageFilter, NewImage
from vizdex.search.service import SearchOptions, SearchService
from vizdex.search.settings import CatalogSettings, SearchSettings

OTHER = "n"


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, data_dir: Path) -> str:
    return database_url_for(request, data_dir)


@pytest.fixture
def services(
    search_settings: SearchSettings, data_dir: Path
) -> Iterator[tuple[SearchService, SearchService, MilvusVectorStore]]:
    faiss, milvus = open_pair(search_settings, data_dir / "vectors.db", "flat")
    assert isinstance(milvus.store, MilvusVectorStore)
    yield faiss, milvus, milvus.store
    milvus.close()
    faiss.close()


def two_model_items(count: int) -> list[NewImage]:
    first, second = unit_rows(count, seed=51), unit_rows(count, seed=52)
    return [
        replace(item, vectors={MODEL: first[i], OTHER: second[i]})
        for i, item in enumerate(items(first, 0))
    ]


def test_remove_model_drops_its_milvus_collection_and_nothing_brings_it_back(
    services: tuple[SearchService, SearchService, MilvusVectorStore],
) -> None:
    faiss, milvus, store = services
    record = faiss.catalog.create_collection("c", [MODEL, OTHER])
    faiss.add_images("c", two_model_items(30))
    milvus.catch_up("c", faiss.collection_seq("c"))
    kept, removed = store.name_of(record.id, MODEL), store.name_of(record.id, OTHER)
    assert store.client.has_collection(kept) and store.client.has_collection(removed)

    milvus.remove_model("c", OTHER)
    assert not store.client.has_collection(removed)
    assert store.client.has_collection(kept)
    # A batch read before the removal (the follower's record still lists the model) is applied
    # after it: its watermark write finds the model gone, and what it wrote goes again.
    assert store.store_position_of(record.id, OTHER) is None
    faiss.add_images("c", items(unit_rows(3, seed=5), 1000))  # the kept model's only
    assert not store.apply_batch(record, OTHER)  # the old record: OTHER still in its models
    assert not store.client.has_collection(removed)
    store.follow()
    assert not store.client.has_collection(removed)
    assert store.store_position_of(record.id, OTHER) is None
    hits = milvus.search_vector("c", unit_rows(1, seed=3)[0], model=MODEL)
    assert len(hits.hits) == 10


def test_a_batch_in_flight_during_a_removal_leaves_nothing(
    services: tuple[SearchService, SearchService, MilvusVectorStore],
) -> None:
    """The follower read a batch of the model's vectors, the model was removed, then the batch
    went in (re-creating the Milvus collection): the watermark write sees the model gone and
    drops what the batch made."""
    faiss, _milvus, store = services
    record = faiss.catalog.create_collection("c", [MODEL, OTHER])
    faiss.add_images("c", two_model_items(20))
    assert store.catch_up(record)
    faiss.add_images("c", two_model_items(26)[20:])
    batch = store.read_batch(record, OTHER)
    assert batch is not None and len(batch.changes.added_ids) == 6
    faiss.remove_model("c", OTHER)  # a process configured with FAISS: Milvus not told
    store.write_batch(batch)
    assert store.client.has_collection(batch.name)  # the late batch made it again
    assert not store.commit_batch(batch)
    assert not store.client.has_collection(batch.name)


def test_a_removal_or_deletion_elsewhere_is_pruned_by_the_follower(
    services: tuple[SearchService, SearchService, MilvusVectorStore],
) -> None:
    faiss, _milvus, store = services
    record = faiss.catalog.create_collection("c", [MODEL, OTHER])
    gone = faiss.catalog.create_collection("g", [MODEL])
    faiss.add_images("c", two_model_items(10))
    faiss.add_images("g", items(unit_rows(5, seed=8), 0))
    store.follow()
    # Another catalog's collection whose prefix starts with this one's: never this one's to drop.
    foreign = store.name_of(gone.id, MODEL).replace("_", "_b_", 1)
    store.client.create_collection(foreign, dimension=4)
    names = [store.name_of(record.id, m) for m in (MODEL, OTHER)] + [store.name_of(gone.id, MODEL)]
    assert all(store.client.has_collection(name) for name in names)
    faiss.remove_model("c", OTHER)  # FAISS-configured: they stay in Milvus for now
    faiss.delete_collection("g")
    assert all(store.client.has_collection(name) for name in names)
    store.follow()
    assert [store.client.has_collection(name) for name in names] == [True, False, False]
    assert store.client.has_collection(foreign)
    store.client.drop_collection(foreign)


def test_metadata_changes_reach_milvus_from_a_faiss_configured_process(
    services: tuple[SearchService, SearchService, MilvusVectorStore],
) -> None:
    faiss, milvus, store = services
    record = faiss.catalog.create_collection("c", [MODEL])
    added = faiss.add_images("c", items(unit_rows(60, seed=61), 0))
    store.follow()
    before = faiss.collection_seq("c")
    faiss.update_metadata("c", added[7].id, {"color": "teal"})
    faiss.update_metadata("c", added[9].id, {"color": "teal", "n": 1})
    assert faiss.collection_seq("c") == before + 2  # each change took a sequence number
    changed = faiss.catalog.metadata_changes(record.id, after_seq=before, upto_seq=before + 2)
    assert sorted(changed) == sorted([added[7].id, added[9].id])
    milvus.catch_up("c", faiss.collection_seq("c"))  # min_seq: the watermark passed them
    teal = ImageFilter(metadata={"color": "teal"})
    found = milvus.search_vector(
        "c", unit_rows(1, seed=2)[0], model=MODEL, options=SearchOptions(k=10, filters=teal)
    )
    assert sorted(h.image_id for h in found.hits) == sorted([added[7].id, added[9].id])
    # Milvus holds the new metadata itself (the filter ran there), not only the catalog.
    name = store.name_of(record.id, MODEL)
    rows = store.client.query(name, filter='meta["color"] == "teal"', output_fields=["id"])
    assert sorted(int(r["id"]) for r in rows) == sorted([added[7].id, added[9].id])


@pytest.fixture
def pg_settings(postgres_url: str, data_dir: Path) -> SearchSettings:
    settings = SearchSettings.for_data_dir(data_dir)
    return replace(settings, catalog=CatalogSettings(postgres_url))


def _terminate_other_advisory_sessions(service: SearchService) -> None:
    with service.catalog.engine.connect() as connection:
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND pid <> pg_backend_pid()"
            )
        )
        connection.commit()


def test_an_overtaken_follower_is_fenced_and_its_late_batch_is_overwritten(
    pg_settings: SearchSettings, data_dir: Path
) -> None:
    """Two followers; the first reads a batch and pauses; its session dies and the second takes
    over (a newer term), applies a delete of an image that batch would write back. When the
    first resumes: its watermark write is refused (the watermark stays the second's), and the
    images of its late batch go into the feed again, so the second leaves Milvus exactly as the
    catalog is."""
    lite = data_dir / "shared.db"
    faiss, first = open_pair(pg_settings, lite, "flat")
    spare, second = open_pair(pg_settings, lite, "flat")
    spare.close()
    a, b = first.store, second.store
    assert isinstance(a, MilvusVectorStore) and isinstance(b, MilvusVectorStore)
    try:
        record = faiss.catalog.create_collection("c", [MODEL])
        faiss.add_images("c", items(unit_rows(20, seed=71), 0))
        assert a.catch_up(record) and not b.catch_up(record)
        term_a = a.leader_term
        assert term_a is not None
        added = faiss.add_images("c", items(unit_rows(10, seed=72), 100))
        late = a.read_batch(record, MODEL)  # the first reads the next batch, then pauses
        assert late is not None and late.term == term_a
        moved, old_vector = added[0].id, late.changes.added_vectors[0]
        assert int(late.changes.added_ids[0]) == moved

        _terminate_other_advisory_sessions(faiss)  # the first's lock goes with its session
        time.sleep(1.1)  # a process that lost the race asks again after a second
        new_vector = unit_rows(1, seed=73)
        faiss.catalog.put_embeddings(record.id, MODEL, [moved], new_vector)  # re-embedded
        faiss.delete_images("c", [added[1].id])
        assert b.catch_up(record)  # the second leads now, with a newer term
        assert b.leader_term is not None and b.leader_term > term_a
        head = faiss.collection_seq("c")
        assert b.store_position_of(record.id, MODEL) == head
        np.testing.assert_allclose(
            b.vectors(record, MODEL, [moved])[moved], new_vector[0], atol=1e-3
        )

        with pytest.raises(FollowerFencedError):  # checked before it writes
            a.write_batch(late)
        # Had it passed that check just before the takeover, its write lands late...
        a.write_batch(replace(late, term=None))
        np.testing.assert_allclose(a.vectors(record, MODEL, [moved])[moved], old_vector, atol=1e-3)
        with pytest.raises(FollowerFencedError):  # ...and its watermark write is refused
            a.commit_batch(late)
        assert b.store_position_of(record.id, MODEL) == head  # not moved back
        assert a.leader_term is None  # it stood down
        assert b.catch_up(record)  # the requeued images: the catalog's state over the late batch
        np.testing.assert_allclose(
            b.vectors(record, MODEL, [moved])[moved], new_vector[0], atol=1e-3
        )
        truth = faiss.catalog.filter_image_ids(record.id, ImageFilter())
        assert b.ids(record, MODEL).tolist() == sorted(truth)
        assert b.store_position_of(record.id, MODEL) == faiss.collection_seq("c") > head
    finally:
        for service in (second, first, faiss):
            service.close()


def test_the_term_grows_with_each_leader(pg_settings: SearchSettings, data_dir: Path) -> None:
    lite = data_dir / "terms.db"
    faiss, first = open_pair(pg_settings, lite, "flat")
    try:
        store = first.store
        assert isinstance(store, MilvusVectorStore)
        terms: list[int] = []
        for _ in range(3):
            faiss.catalog.create_collection(f"c{len(terms)}", [MODEL])
            record = faiss.get_collection(f"c{len(terms)}")
            # The lock is free once the database ends the old session; asked again each second.
            deadline = time.monotonic() + 30
            while not store.catch_up(record) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert store.leader_term is not None
            terms.append(store.leader_term)
            store.stand_down()
            assert store.leader_term is None
        assert np.diff(terms).tolist() == [1, 1]  # each leadership a new, higher term
    finally:
        first.close()
        faiss.close()
