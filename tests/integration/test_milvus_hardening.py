"""Milvus as the vector store under hostile input and bad timing (issue 18's adversarial run):
filter values with any characters, metadata Milvus cannot hold, a deleted collection's id given
out again, a rebuild killed between its steps, a follower fenced and then left alone, Milvus
failing after a write was committed, a store setting without a host."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from pymilvus import MilvusException

from tests.support.milvus import DIM, MODEL, items, milvus_index_settings, open_pair, unit_rows
from vizdex.core.errors import InvalidInputError
from vizdex.search import milvus_store
from vizdex.search.errors import InvalidQueryError, VectorStoreUnavailableError
from vizdex.search.milvus_store import (
    FIELD_CREATED,
    FIELD_ID,
    FIELD_META,
    FIELD_VECTOR,
    REBUILDING,
    MilvusVectorStore,
)
from vizdex.search.records import CollectionRecord, ImageFilter, NewImage
from vizdex.search.service import SearchOptions, SearchService
from vizdex.search.settings import SearchSettings


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[SearchService, SearchService]]:
    faiss, milvus = open_pair(SearchSettings.for_data_dir(tmp_path), tmp_path / "v.db", "flat")
    yield faiss, milvus
    milvus.close()
    faiss.close()


def _store(service: SearchService) -> MilvusVectorStore:
    assert isinstance(service.store, MilvusVectorStore)
    return service.store


def _milvus_ids(service: SearchService, collection: str) -> list[int]:
    record = service.get_collection(collection)
    return sorted(_store(service).ids(record, MODEL).tolist())


def _catalog_ids(service: SearchService, collection: str) -> list[int]:
    record = service.get_collection(collection)
    _, count, _ = service.catalog.embedding_summary(record.id, MODEL)
    ids = service.catalog.filter_image_ids(record.id, ImageFilter(), limit=count + 10)
    return sorted(int(i) for i in ids)


def _image(key: int, metadata: dict[str, Any]) -> NewImage:
    (image,) = items(unit_rows(1, seed=key), key)
    return replace(image, metadata=metadata)


def _milvus_down(*args: object, **kwargs: object) -> None:
    raise MilvusException(message="node down")


def _followed(
    pair: tuple[SearchService, SearchService], name: str, count: int, seed: int
) -> CollectionRecord:
    """A collection of ``count`` images, Milvus caught up with it."""
    faiss, milvus = pair
    record = faiss.catalog.create_collection(name, [MODEL])
    faiss.add_images(name, items(unit_rows(count, seed=seed), 0))
    milvus.catch_up(name, faiss.collection_seq(name))
    return record


STRANGE = [
    "é accent",
    "日本",
    "😀 emoji",
    "a\x00b",
    "tab\there",
    "line\nbreak",
    "cr\rhere",
    "\u2028",
    "\x1f",
    '" or meta["q"] != "',
    "back\\slash",
    "\\u00e9",  # the six characters, not an escape
]


def test_filter_values_with_any_characters_find_exactly_their_images(
    pair: tuple[SearchService, SearchService],
) -> None:
    faiss, milvus = pair
    faiss.catalog.create_collection("s", [MODEL])
    faiss.add_images("s", [_image(n, {"q": value}) for n, value in enumerate(STRANGE)])
    milvus.catch_up("s", faiss.collection_seq("s"))
    record = faiss.get_collection("s")
    query = unit_rows(1, seed=99)[0]
    for value in STRANGE:
        options = SearchOptions(k=10, filters=ImageFilter(metadata={"q": value}))
        found = [
            [
                hit.image_id
                for hit in service.search_vector("s", query, model=MODEL, options=options).hits
            ]
            for service in (faiss, milvus)
        ]
        assert found[0] == found[1] and len(found[1]) == 1, value
        assert faiss.catalog.get_image(record.id, found[1][0]).metadata["q"] == value


@pytest.mark.parametrize("number", [2**63, -(2**63) - 1, 10**30, 10**400])
def test_integers_beyond_64_bits_are_kept_and_do_not_stop_the_follower(
    pair: tuple[SearchService, SearchService], number: int
) -> None:
    """JSON allows integers of any size; Milvus's JSON field does not (pymilvus refuses the
    row). The catalog keeps them exactly, Milvus gets a float (or a string) in their place, and
    the follower goes on: every image reaches Milvus and filters on other keys agree."""
    faiss, milvus = pair
    faiss.catalog.create_collection("b", [MODEL])
    added = faiss.add_images(
        "b",
        [
            _image(1, {"big": number, "tag": "t"}),
            _image(2, {"deep": {"list": [1, number]}, "tag": "t"}),
            _image(3, {"edge": 2**63 - 1, "low": -(2**63), "tag": "u"}),
        ],
    )
    faiss.update_metadata("b", added[2].id, {"edge": number, "tag": "u"})
    milvus.catch_up("b", faiss.collection_seq("b"))
    assert _milvus_ids(milvus, "b") == sorted(a.id for a in added)
    record = faiss.get_collection("b")
    assert faiss.catalog.get_image(record.id, added[0].id).metadata["big"] == number
    query = unit_rows(1, seed=21)[0]
    for tag in ("t", "u"):
        options = SearchOptions(k=10, filters=ImageFilter(metadata={"tag": tag}))
        found = [
            sorted(hit.image_id for hit in service.search_vector("b", query, options=options).hits)
            for service in (faiss, milvus)
        ]
        assert found[0] == found[1] and found[1]


def test_a_deleted_collections_reused_id_starts_an_empty_milvus_collection(
    pair: tuple[SearchService, SearchService],
) -> None:
    """SQLite gives a deleted collection's id to the next one. A process configured with FAISS
    deleted it, so Milvus still holds its vectors under the same name: the new collection's
    feed starts from nothing, and its first batch must drop them."""
    faiss, milvus = pair
    old = faiss.catalog.create_collection("old", [MODEL])
    faiss.add_images("old", items(unit_rows(50, seed=3), 0))
    milvus.catch_up("old", faiss.collection_seq("old"))
    assert len(_milvus_ids(milvus, "old")) == 50
    faiss.delete_collection("old")  # FAISS's process: Milvus is not told
    new = faiss.catalog.create_collection("new", [MODEL])
    assert new.id == old.id  # the precondition: the id was given out again
    added = faiss.add_images("new", items(unit_rows(5, seed=4), 100))
    milvus.catch_up("new", faiss.collection_seq("new"))
    assert _milvus_ids(milvus, "new") == sorted(a.id for a in added)
    hits = milvus.search_vector(
        "new", unit_rows(1, seed=5)[0], model=MODEL, options=SearchOptions(k=4, offset=0)
    ).hits
    more = milvus.search_vector(
        "new", unit_rows(1, seed=5)[0], model=MODEL, options=SearchOptions(k=4, offset=4)
    ).hits
    assert len(hits) == 4 and len(more) == 1  # pages neither overlap nor miss images
    assert not {h.image_id for h in hits} & {h.image_id for h in more}


def test_a_rebuild_killed_after_resetting_its_watermark_rebuilds_whole(
    pair: tuple[SearchService, SearchService],
) -> None:
    """The state ``vizdex reindex`` leaves when killed between resetting the watermark and
    dropping the collection: the follower drops what is there, rows the catalog no longer has
    included, and starts the feed again."""
    faiss, milvus = pair
    record = _followed(pair, "r", 30, 6)
    store = _store(milvus)
    name = store.name_of(record.id, MODEL)
    stale = {FIELD_ID: 0, FIELD_VECTOR: unit_rows(1, seed=7)[0].tolist(), FIELD_META: {}}
    stale[FIELD_CREATED] = 0
    store.client.upsert(name, [stale])  # a row the catalog never had
    _, index_type = store._position(record.id, MODEL)
    faiss.catalog.set_store_position(
        store.target.key,
        record.id,
        MODEL,
        REBUILDING,  # what `vizdex reindex` sets before it drops the collection
        index_type=index_type,
        term=store.leader_term,
    )
    assert 0 in _milvus_ids(milvus, "r")
    milvus.catch_up("r", faiss.collection_seq("r"))
    assert _milvus_ids(milvus, "r") == _catalog_ids(faiss, "r")
    assert store.count(record, MODEL) == 30


def test_a_rebuild_that_cannot_reset_its_watermark_leaves_milvus_as_it_was(
    pair: tuple[SearchService, SearchService], monkeypatch: pytest.MonkeyPatch
) -> None:
    faiss, milvus = pair
    _followed(pair, "w", 20, 8)
    before = _milvus_ids(milvus, "w")

    def locked(*args: object, **kwargs: object) -> bool:
        raise OSError("database is locked")

    monkeypatch.setattr(milvus.catalog, "set_store_position", locked)
    with pytest.raises(OSError, match="locked"):
        _store(milvus).reindex(milvus.get_collection("w"))
    monkeypatch.undo()
    assert _milvus_ids(milvus, "w") == before == _catalog_ids(faiss, "w")


LEASE_S = 4.0  # long enough for the steps before the stall to run under load


def test_on_sqlite_a_lease_picks_one_follower_and_a_stalled_one_follows_again_later(
    tmp_path: Path,
) -> None:
    """SQLite has no advisory lock: a lease in the catalog picks the follower. A second process
    neither fences a live follower (no ping-pong; a rebuild is refused with a reason) nor waits
    for ever on one that stopped renewing; the stalled one loses its lease and leads again once
    the other lets it go."""
    base = SearchSettings.for_data_dir(tmp_path)
    settings = replace(base, index=replace(base.index, milvus_lease_s=LEASE_S))
    faiss, first = open_pair(settings, tmp_path / "v.db", "flat")
    spare, second = open_pair(settings, tmp_path / "v.db", "flat")
    spare.close()
    a, b = _store(first), _store(second)
    try:
        faiss.catalog.create_collection("f", [MODEL])
        faiss.add_images("f", items(unit_rows(10, seed=9), 0))
        record = faiss.get_collection("f")
        assert a.catch_up(record)
        term = a.leader_term
        assert not b.catch_up(record) and b.leader_term is None  # a live lease
        with pytest.raises(VectorStoreUnavailableError, match="another process follows"):
            b.reindex(record)
        assert a.leader_term == term and a.catch_up(record)  # not fenced by either

        time.sleep(LEASE_S + 0.3)  # `a` stalls past its lease: `b` takes over
        assert b.catch_up(record) and (b.leader_term or 0) > (term or 0)
        taken = b.leader_term or 0
        faiss.add_images("f", items(unit_rows(10, seed=10), 50))
        assert not a.catch_up(record) and a.leader_term is None  # it lost the lease
        second.close()  # lets its lease go: no waiting it out
        time.sleep(1.1)  # a process that did not lead asks again after a second
        assert a.catch_up(record) and (a.leader_term or 0) > taken
        assert a.store_position_of(record.id, MODEL) == faiss.collection_seq("f")
        assert _milvus_ids(first, "f") == _catalog_ids(faiss, "f")
    finally:
        first.close()
        faiss.close()


def test_a_write_milvus_fails_to_take_is_acknowledged_and_followed_later(
    pair: tuple[SearchService, SearchService], monkeypatch: pytest.MonkeyPatch
) -> None:
    faiss, milvus = pair
    faiss.catalog.create_collection("p", [MODEL])
    (added,) = milvus.add_images("p", [_image(1, {"color": "red"})])
    store = _store(milvus)

    monkeypatch.setattr(store.client, "upsert", _milvus_down)
    image = milvus.update_metadata("p", added.id, {"color": "blue"})  # committed: no 503
    assert image.metadata == {"color": "blue"}
    more = milvus.add_images("p", [_image(2, {"color": "blue"})])
    monkeypatch.undo()
    milvus.catch_up("p", faiss.collection_seq("p"))
    blue = SearchOptions(k=10, filters=ImageFilter(metadata={"color": "blue"}))
    hits = milvus.search_vector("p", unit_rows(1, seed=3)[0], model=MODEL, options=blue).hits
    assert sorted(h.image_id for h in hits) == sorted([added.id, more[0].id])


def test_one_collection_milvus_refuses_does_not_stop_the_others(
    pair: tuple[SearchService, SearchService], monkeypatch: pytest.MonkeyPatch
) -> None:
    faiss, milvus = pair
    bad = faiss.catalog.create_collection("a-bad", [MODEL])
    faiss.catalog.create_collection("z-good", [MODEL])
    faiss.add_images("a-bad", items(unit_rows(3, seed=11), 0))
    faiss.add_images("z-good", items(unit_rows(3, seed=12), 10))
    store = _store(milvus)
    real = store.client.upsert
    bad_name = store.name_of(bad.id, MODEL)

    def refuse_one(name: str, rows: Any, **kwargs: Any) -> Any:
        if name == bad_name:
            raise MilvusException(message="rows refused")
        return real(name, rows, **kwargs)

    monkeypatch.setattr(store.client, "upsert", refuse_one)
    with pytest.raises(Exception, match="rows refused"):
        store.follow()
    record = faiss.get_collection("z-good")
    assert store.store_position_of(record.id, MODEL) == faiss.collection_seq("z-good")
    assert _milvus_ids(milvus, "z-good") == _catalog_ids(faiss, "z-good")


@pytest.mark.parametrize("spec", ["milvus://", "http://", "https://:19530", "milvus://h:port"])
def test_a_milvus_setting_without_a_usable_host_is_refused(tmp_path: Path, spec: str) -> None:
    settings = SearchSettings.for_data_dir(tmp_path)
    bad = replace(settings, index=replace(settings.index, vector_store=spec))
    with pytest.raises(InvalidInputError, match="VIZDEX_VECTOR_STORE"):
        SearchService.open(bad, {})


def test_a_lite_file_whose_folder_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    settings = SearchSettings.for_data_dir(tmp_path / "data")
    bad = replace(settings, index=replace(settings.index, vector_store=str(blocker / "v.db")))
    with pytest.raises(Exception, match="cannot make the folder of the milvus-lite file"):
        SearchService.open(bad, {})


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
        datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-14))),
    ],
)
def test_a_created_time_outside_utc_years_is_an_invalid_query(moment: datetime) -> None:
    with pytest.raises(InvalidQueryError, match="outside the years 1 to 9999"):
        ImageFilter(created_after=moment)
    with pytest.raises(InvalidQueryError, match="outside the years 1 to 9999"):
        ImageFilter(created_before=moment)
    np.testing.assert_equal(ImageFilter(created_after=moment.replace(tzinfo=None)).metadata, {})


def test_a_feed_under_another_key_keeps_the_collection_it_refills(
    pair: tuple[SearchService, SearchService], tmp_path: Path
) -> None:
    """The same Milvus named another way (``http://`` for ``milvus://``, a trailing '/') is
    another target key, with no watermark of its own: its feed must upsert over this
    collection's vectors, not drop them (killed after one batch, it would leave only that)."""
    faiss, milvus = pair
    record = _followed(pair, "k", 30, 13)
    store = _store(milvus)
    index = milvus_index_settings(
        SearchSettings.for_data_dir(tmp_path).index, tmp_path / "v.db", "flat"
    )
    other = MilvusVectorStore(
        milvus.catalog,
        store.client,
        replace(store.target, key=store.target.key + "/"),
        replace(index, milvus_batch=5),
    )
    assert other.apply_batch(record, MODEL)  # one batch of the 30, then "killed"
    assert _milvus_ids(milvus, "k") == _catalog_ids(faiss, "k")
    assert store.count(record, MODEL) == 30


def test_a_delete_milvus_fails_to_apply_is_acknowledged_and_pruned_later(
    pair: tuple[SearchService, SearchService], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, milvus = pair
    record = _followed(pair, "gone", 5, 14)
    store = _store(milvus)
    name = store.name_of(record.id, MODEL)

    monkeypatch.setattr(store.client, "drop_collection", _milvus_down)
    milvus.delete_collection("gone")  # committed: answered, not 503
    assert store.client.has_collection(name)
    monkeypatch.undo()
    store.follow()  # its next round prunes what the catalog no longer has
    assert not store.client.has_collection(name)


def test_a_write_does_not_wait_long_behind_a_stuck_follower(
    pair: tuple[SearchService, SearchService], monkeypatch: pytest.MonkeyPatch
) -> None:
    faiss, milvus = pair
    faiss.catalog.create_collection("stuck", [MODEL])
    store = _store(milvus)
    monkeypatch.setattr(milvus_store, "SYNC_WAIT_S", 0.1)
    held, release = threading.Event(), threading.Event()

    def stuck_follower() -> None:
        with store._follow_lock:  # as a round blocked on an unreachable Milvus
            held.set()
            release.wait(60)

    thread = threading.Thread(target=stuck_follower)
    thread.start()
    try:
        assert held.wait(10)
        added = milvus.add_images("stuck", [_image(7, {"x": 1})])  # returns: the lock is left
        assert thread.is_alive() and len(added) == 1
    finally:
        release.set()
        thread.join()
    milvus.catch_up("stuck", faiss.collection_seq("stuck"))
    assert _milvus_ids(milvus, "stuck") == [added[0].id]


@pytest.mark.parametrize("width", [DIM, DIM * 2])
def test_a_model_removed_and_added_again_starts_an_empty_milvus_collection(
    pair: tuple[SearchService, SearchService], width: int
) -> None:
    """A model removed by a process that does not follow Milvus (or whose drop failed), then
    added again under the same name before a follower round: the same Milvus name, no
    watermark, the same images — but none of its rows has the catalog's new vector (or even its
    width), so it is dropped before the new vectors go in."""
    faiss, milvus = pair
    record = _followed(pair, "mm", 40, 15)
    catalog = faiss.catalog
    catalog.add_model(record.id, "other")  # a collection keeps at least one model
    catalog.remove_model(record.id, MODEL)
    catalog.add_model(record.id, MODEL)
    image_ids = sorted(catalog.filter_image_ids(record.id, ImageFilter(), limit=5))
    fresh = np.random.default_rng(16).standard_normal((5, width)).astype(np.float32)
    fresh /= np.linalg.norm(fresh, axis=1, keepdims=True)
    catalog.put_embeddings(record.id, MODEL, image_ids, fresh)
    store = _store(milvus)
    store.follow()
    assert store.store_position_of(record.id, MODEL) == faiss.collection_seq("mm")
    assert _milvus_ids(milvus, "mm") == image_ids
