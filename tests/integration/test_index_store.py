"""Indexes kept consistent with the catalog: replay, corrupt files, retrain, crashes."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event

import vizdex.search.index_store as index_store_module
from tests.conftest import ImageFactory, UnitVectors
from tests.support.postgres import DATABASES, database_url_for
from vizdex.search.catalog import Catalog
from vizdex.search.index import IndexBackend, IndexPolicy, VectorIndex
from vizdex.search.index_file import read_snapshot, write_snapshot
from vizdex.search.index_slot import write_index_file
from vizdex.search.index_store import IndexStore
from vizdex.search.records import CollectionRecord
from vizdex.search.settings import IndexSettings, SearchSettings
from vizdex.search.vector_source import VectorSource

DIM = 16
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, data_dir: Path) -> str:
    """Every test here runs on a SQLite catalog and on a PostgreSQL one."""
    return database_url_for(request, data_dir)


@pytest.fixture
def index_settings(search_settings: SearchSettings) -> IndexSettings:
    # No automatic snapshots unless a test asks: each test decides what is on disk.
    return replace(search_settings.index, snapshot_every=1_000_000, device="cpu")


@pytest.fixture
def collection(catalog: Catalog) -> CollectionRecord:
    return catalog.create_collection("photos", ["m"])


@pytest.fixture
def store(catalog: Catalog, index_settings: IndexSettings) -> Iterator[IndexStore]:
    opened = IndexStore(catalog, index_settings)
    yield opened
    opened.close(snapshot=False)


class Writer:
    """Adds seeded random images to the catalog and remembers their vectors."""

    def __init__(
        self,
        catalog: Catalog,
        collection: CollectionRecord,
        unit_vectors: UnitVectors,
        new_image: ImageFactory,
        dim: int = DIM,
    ) -> None:
        self.catalog, self.collection = catalog, collection
        self.unit_vectors, self.new_image = unit_vectors, new_image
        self.dim = dim
        self.count = 0

    def add(self, count: int, dim: int | None = None) -> list[int]:
        vectors = self.unit_vectors(count, dim or self.dim)
        items = [self.new_image(("img", self.count + i), {"m": vectors[i]}) for i in range(count)]
        self.count += count
        return [o.id for o in self.catalog.add_images(self.collection.id, items)]


@pytest.fixture
def writer(
    catalog: Catalog,
    collection: CollectionRecord,
    unit_vectors: UnitVectors,
    new_image: ImageFactory,
) -> Writer:
    return Writer(catalog, collection, unit_vectors, new_image)


def assert_matches_catalog(
    store: IndexStore, catalog: Catalog, collection: CollectionRecord
) -> None:
    """The index holds exactly the catalog's vectors: same ids, and each finds itself."""
    seq = catalog.collection_seq(collection.id)
    batches = list(catalog.iter_embeddings(collection.id, "m", upto_seq=seq))
    ids = np.concatenate([b[0] for b in batches]) if batches else np.zeros(0, np.int64)
    assert sorted(store.ids(collection, "m").tolist()) == sorted(ids.tolist())
    if not batches:
        return
    vectors = np.concatenate([b[1] for b in batches])
    output = store.search(collection, "m", vectors, 1, exhaustive=True)
    np.testing.assert_array_equal(output.ids[:, 0], ids)
    np.testing.assert_allclose(output.scores[:, 0], 1.0, atol=1e-4)


def test_an_index_is_built_from_the_catalog_and_follows_it(
    store: IndexStore, catalog: Catalog, collection: CollectionRecord, writer: Writer
) -> None:
    assert store.info(collection, "m").count == 0  # no vector yet: nothing to search
    assert (store.search(collection, "m", np.ones((1, DIM), np.float32), 3).ids == -1).all()
    ids = writer.add(40)
    store.sync(collection)
    catalog.delete_images(collection.id, ids[:5])
    store.sync(collection)
    info = store.info(collection, "m")
    assert (info.kind, info.count, info.dim) == ("flat", 35, DIM)
    assert info.last_seq == catalog.collection_seq(collection.id)
    assert_matches_catalog(store, catalog, collection)


def test_writes_by_someone_else_are_seen_by_the_next_query(
    store: IndexStore, catalog: Catalog, collection: CollectionRecord, writer: Writer
) -> None:
    writer.add(10)
    assert_matches_catalog(store, catalog, collection)
    # Another process (the indexer, say) writes to the catalog; nobody calls sync here.
    added = writer.add(5)
    catalog.delete_images(collection.id, added[:2])
    query = np.ones((1, DIM), np.float32)
    store.search(collection, "m", query, 1)
    assert store.info(collection, "m").count == 13
    assert_matches_catalog(store, catalog, collection)


def test_reopening_replays_what_came_after_the_snapshot(
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
    unit_vectors: UnitVectors,
) -> None:
    store = IndexStore(catalog, index_settings)
    before = writer.add(300)
    store.sync(collection)
    store.snapshot(collection)
    snapshot_seq = catalog.collection_seq(collection.id)
    after = writer.add(200)
    catalog.delete_images(collection.id, before[:25] + after[:25])
    catalog.put_embeddings(collection.id, "m", before[100:110], unit_vectors(10, DIM))
    store.sync(collection)
    store.close(snapshot=False)  # the process dies: no snapshot of the later writes

    header, _ = read_snapshot(store.path_for(collection.id, "m"))
    assert header["last_seq"] == snapshot_seq and header["count"] == 300

    reopened = IndexStore(catalog, index_settings)
    try:
        info = reopened.info(collection, "m")
        assert info.count == 450 and info.last_seq == catalog.collection_seq(collection.id)
        assert_matches_catalog(reopened, catalog, collection)
        gone = np.asarray(before[:25] + after[:25])
        hits = reopened.search(collection, "m", unit_vectors(50, DIM), 100).ids
        assert not np.isin(hits, gone).any()
    finally:
        reopened.close(snapshot=False)
    assert not list(store.path_for(collection.id, "m").parent.glob("*.corrupt"))


def _damage_and_reopen(
    damage: str,
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
) -> IndexStore:
    store = IndexStore(catalog, index_settings)
    writer.add(120)
    store.sync(collection)
    store.snapshot(collection)
    writer.add(30)  # also something to replay on top of the rebuilt index
    store.close(snapshot=False)
    path = store.path_for(collection.id, "m")
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        path.write_bytes(bytes(data[: len(data) * 2 // 3]))
    elif damage == "bit-flipped":
        data[len(data) // 2] ^= 0x01  # one bit in the middle of the vectors
        path.write_bytes(bytes(data))
    elif damage == "directory":  # found by an adversarial run: the server did not start
        path.unlink()
        path.mkdir()
        (path / "inside").write_text("kept")
    elif damage == "fifo":  # reading it would block the start for ever
        path.unlink()
        os.mkfifo(path)
    elif damage == "looping-link":
        path.unlink()
        path.symlink_to(path.name)
    else:
        path.unlink()
    return IndexStore(catalog, index_settings)


@pytest.mark.parametrize(
    "damage", ["truncated", "bit-flipped", "directory", "fifo", "looping-link"]
)
def test_a_damaged_index_file_is_moved_aside_and_rebuilt(
    damage: str,
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
) -> None:
    store = _damage_and_reopen(damage, catalog, collection, index_settings, writer)
    try:
        path = store.path_for(collection.id, "m")
        assert store.info(collection, "m").count == 150
        assert_matches_catalog(store, catalog, collection)
        # lexists: a link moved aside may point anywhere (here, back at the rebuilt file).
        assert os.path.lexists(path.with_name(path.name + ".corrupt"))
        store.wait_idle()  # the rebuilt index is saved again
        header, _ = read_snapshot(path)
        assert header["count"] == 150
    finally:
        store.close(snapshot=False)


def test_a_folder_is_moved_aside_beside_an_older_corrupt_file(
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
) -> None:
    first = _damage_and_reopen("truncated", catalog, collection, index_settings, writer)
    path = first.path_for(collection.id, "m")
    first.info(collection, "m")
    first.close(snapshot=False)
    older = path.with_name(path.name + ".corrupt")
    assert older.is_file()
    store = _damage_and_reopen("directory", catalog, collection, index_settings, writer)
    try:
        assert_matches_catalog(store, catalog, collection)
        assert older.is_file()
        (kept,) = path.parent.glob(path.name + ".corrupt.*")
        assert (kept / "inside").read_text() == "kept"
    finally:
        store.close(snapshot=False)


def test_a_missing_index_file_is_rebuilt_without_complaint(
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
) -> None:
    store = _damage_and_reopen("missing", catalog, collection, index_settings, writer)
    try:
        assert_matches_catalog(store, catalog, collection)
        assert not list(store.path_for(collection.id, "m").parent.glob("*.corrupt"))
    finally:
        store.close(snapshot=False)


def test_a_file_ahead_of_the_catalog_is_not_trusted(
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
    tmp_path: Path,
    new_image: ImageFactory,
    unit_vectors: UnitVectors,
) -> None:
    store = IndexStore(catalog, index_settings)
    writer.add(50)
    store.sync(collection)
    store.snapshot(collection)
    store.close(snapshot=False)
    # A restored backup of the database: same collection id, fewer changes.
    other = SearchSettings.for_data_dir(tmp_path / "restored")
    restored = Catalog.open(other.catalog)
    try:
        again = restored.create_collection("photos", ["m"])
        vectors = unit_vectors(5, DIM)
        restored.add_images(again.id, [new_image(i, {"m": vectors[i]}) for i in range(5)])
        target = replace(index_settings, directory=other.index.directory)
        source = store.path_for(collection.id, "m")
        copied = target.directory / source.relative_to(index_settings.directory)
        copied.parent.mkdir(parents=True)
        shutil.copy(source, copied)
        fresh = IndexStore(restored, target)
        try:
            assert fresh.info(again, "m").count == 5
            assert_matches_catalog(fresh, restored, again)
            assert copied.with_name(copied.name + ".corrupt").exists()
        finally:
            fresh.close(snapshot=False)
    finally:
        restored.close()


def test_a_well_formed_file_that_disagrees_with_the_catalog_is_rebuilt(
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
    unit_vectors: UnitVectors,
) -> None:
    ids = writer.add(20)
    seq = catalog.collection_seq(collection.id)
    backend = IndexBackend(use_gpu=False)
    wrong = VectorIndex.build(  # claims to be at the catalog's position, but lost one vector
        np.asarray(ids[1:]),
        unit_vectors(19, DIM),
        IndexPolicy(exact_max=100),
        backend,
        last_seq=seq,
    )
    payload, spec, _ = wrong.serialize()
    store = IndexStore(catalog, index_settings)
    header = {"collection_id": collection.id, "model": "m", "last_seq": seq, "count": 19}
    write_snapshot(store.path_for(collection.id, "m"), {**header, "spec": spec.to_dict()}, payload)
    try:
        assert_matches_catalog(store, catalog, collection)
    finally:
        store.close(snapshot=False)


def saved_snapshot(
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
    count: int,
) -> tuple[dict[str, Any], np.ndarray, Path]:
    """``count`` vectors indexed and snapshotted, the store closed: the snapshot's header,
    payload and path."""
    store = IndexStore(catalog, index_settings)
    writer.add(count)
    store.sync(collection)
    store.snapshot(collection)
    store.close(snapshot=False)
    path = store.path_for(collection.id, "m")
    header, payload = read_snapshot(path)
    return header, payload, path


class GatedStore(IndexStore):
    """Holds a retrain between building the new index and swapping it in."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.built = threading.Event()
        self.release = threading.Event()

    def build_index(
        self, source: VectorSource, policy: IndexPolicy, *, last_seq: int, dim: int
    ) -> VectorIndex:
        index = super().build_index(source, policy, last_seq=last_seq, dim=dim)
        if index.spec.kind != "flat":
            self.built.set()
            assert self.release.wait(timeout=30)
        return index


def test_growth_retrains_in_the_background_and_swaps_without_losing_writes(
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
    unit_vectors: UnitVectors,
) -> None:
    store = GatedStore(catalog, replace(index_settings, exact_max=1000))
    try:
        first = writer.add(900)
        store.sync(collection)
        assert store.info(collection, "m").kind == "flat"
        writer.add(200)  # past exact_max: a retrain starts in the background
        store.sync(collection)
        assert store.built.wait(timeout=60)
        assert store.info(collection, "m").retraining

        # While the new index waits to be swapped in, the old one keeps serving and updating.
        during = writer.add(150)
        catalog.delete_images(collection.id, first[:40] + during[:10])
        store.sync(collection)
        queries = unit_vectors(20, DIM)
        assert (store.search(collection, "m", queries, 10).ids >= 0).all()
        assert store.info(collection, "m").kind == "flat"

        store.release.set()
        store.wait_idle(timeout=60)
        info = store.info(collection, "m")
        assert info.kind == "ivf" and not info.retraining
        assert info.count == 900 + 200 + 150 - 50
        assert_matches_catalog(store, catalog, collection)  # including writes made meanwhile
        header, _ = read_snapshot(store.path_for(collection.id, "m"))
        assert header["spec"]["kind"] == "ivf" and header["count"] == info.count
    finally:
        store.release.set()
        store.close(snapshot=False)


def test_searches_keep_working_while_a_retrain_runs(
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
    unit_vectors: UnitVectors,
) -> None:
    store = GatedStore(catalog, replace(index_settings, exact_max=500))
    errors: list[BaseException] = []
    stop = threading.Event()
    done = [0]

    def searcher() -> None:
        queries = unit_vectors(4, DIM)
        while not stop.is_set():
            try:
                found = store.search(collection, "m", queries, 5).ids
                assert (found >= 0).all()
                done[0] += 1
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)
                return

    try:
        writer.add(400)
        store.sync(collection)  # loads a flat index
        thread = threading.Thread(target=searcher)
        thread.start()
        writer.add(200)
        store.sync(collection)  # past exact_max: retrain in the background
        assert store.built.wait(timeout=60)
        searched = done[0]
        # Still answering while the new index is held back (a wait for progress, not a bound).
        deadline = time.monotonic() + 60
        while done[0] <= searched + 2 and not errors and time.monotonic() < deadline:
            time.sleep(0.01)
        assert done[0] > searched + 2 and not store.release.is_set()
        store.release.set()
        store.wait_idle(timeout=60)
        time.sleep(0.1)
        stop.set()
        thread.join(timeout=10)
        assert not errors
        assert store.info(collection, "m").kind == "ivf"
    finally:
        stop.set()
        store.release.set()
        store.close(snapshot=False)


def test_dropping_a_collection_removes_its_index_files(
    store: IndexStore, catalog: Catalog, collection: CollectionRecord, writer: Writer
) -> None:
    writer.add(10)
    store.sync(collection)
    store.snapshot(collection)
    path = store.path_for(collection.id, "m")
    assert path.exists()
    writer.add(5)
    store.sync(collection)  # a change not saved yet
    catalog.delete_collection("photos")
    store.drop_collection(collection.id)
    assert not path.parent.exists()
    store.close()  # saves every changed index it still knows: not the dropped one
    assert not path.parent.exists()


CHILD = """
import hashlib, sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from vizdex.search.catalog import Catalog
from vizdex.search.index_slot import write_index_file
from vizdex.search.index_store import IndexStore
from vizdex.search.records import NewImage
from vizdex.search.settings import SearchSettings

settings = SearchSettings.for_data_dir(Path(sys.argv[1]))
catalog = Catalog.open(settings.catalog)
collection = catalog.create_collection("photos", ["m"])
store = IndexStore(catalog, replace(settings.index, snapshot_every=200, device="cpu"))
rng = np.random.default_rng(5)
batch = 0
while True:
    vectors = rng.standard_normal((40, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    items = [
        NewImage(
            sha256=hashlib.sha256(f"{batch}-{i}".encode()).hexdigest(),
            width=1, height=1, format="png", byte_size=1, vectors={"m": vectors[i]},
        )
        for i in range(40)
    ]
    added = catalog.add_images(collection.id, items)
    if batch % 3 == 2:
        catalog.delete_images(collection.id, [added[0].id, added[0].id - 45])
    store.sync(collection)
    print(batch, flush=True)
    batch += 1
"""


def test_a_process_killed_mid_write_recovers_exactly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, str(script), str(data)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdout is not None
    settings = SearchSettings.for_data_dir(data)
    index_dir = settings.index.directory
    try:
        deadline = time.monotonic() + 60
        batches = 0
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            assert line, "the writer died on its own"
            batches = int(line) + 1
            saved = list(index_dir.rglob("*.vdx"))
            if batches >= 25 and saved:
                break
        assert batches >= 25
        time.sleep(0.05)  # land somewhere inside the next write
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    catalog = Catalog.open(settings.catalog)
    store = IndexStore(catalog, replace(settings.index, device="cpu"))
    try:
        collection = catalog.get_collection("photos")
        assert catalog.count_images(collection.id) >= 25 * 40 - 25 * 2
        assert_matches_catalog(store, catalog, collection)
    finally:
        store.close(snapshot=False)
        catalog.close()


@pytest.mark.parametrize("where", ["collection folder", "indexes folder"])
@pytest.mark.parametrize("what", ["file", "looping link"])
def test_something_else_where_an_index_folder_belongs_is_moved_aside(
    where: str,
    what: str,
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
) -> None:
    """Found by an adversarial run: every snapshot failed with a traceback, for ever."""
    store = IndexStore(catalog, index_settings)
    writer.add(20)
    store.sync(collection)
    path = store.path_for(collection.id, "m")
    store.close(snapshot=False)
    folder = path.parent if where == "collection folder" else path.parent.parent
    shutil.rmtree(folder, ignore_errors=True)
    if what == "file":
        folder.write_text("in the way")
    else:
        folder.symlink_to(folder.name)
    store = IndexStore(catalog, index_settings)
    try:
        assert_matches_catalog(store, catalog, collection)
        store.snapshot(collection)
        header, _ = read_snapshot(path)
        assert header["count"] == 20
        assert list(folder.parent.glob(folder.name + ".corrupt*"))
    finally:
        store.close(snapshot=False)


@pytest.fixture
def two_models(
    catalog: Catalog, unit_vectors: UnitVectors, new_image: ImageFactory
) -> tuple[CollectionRecord, Writer]:
    """A collection embedded with two models, and a writer that adds to both."""
    both = catalog.create_collection("both", ["m", "n"])

    class BothWriter(Writer):
        def add(self, count: int, dim: int | None = None) -> list[int]:
            vectors = self.unit_vectors(2 * count, dim or self.dim)
            items = [
                self.new_image(("both", self.count + i), {"m": vectors[i], "n": vectors[count + i]})
                for i in range(count)
            ]
            self.count += count
            return [o.id for o in self.catalog.add_images(self.collection.id, items)]

    return both, BothWriter(catalog, both, unit_vectors, new_image)


def test_opening_a_collection_builds_and_saves_every_index_before_any_query(
    catalog: Catalog, index_settings: IndexSettings, two_models: tuple[CollectionRecord, Writer]
) -> None:
    both, adder = two_models
    adder.add(6)
    store = IndexStore(catalog, index_settings)
    try:
        store.open_collection(both)
        store.wait_idle()
        for model in ("m", "n"):
            header, _ = read_snapshot(store.path_for(both.id, model))
            assert (header["count"], header["last_seq"]) == (6, catalog.collection_seq(both.id))
    finally:
        store.close(snapshot=False)


def test_a_sync_that_does_not_wait_skips_only_the_busy_index(
    store: IndexStore, catalog: Catalog, two_models: tuple[CollectionRecord, Writer]
) -> None:
    both, adder = two_models
    adder.add(3)
    store.sync(both)
    adder.add(4)
    busy = store._slot(both, "m").mutex  # as a writer applying the same changes holds it
    with busy:
        store.sync(both, wait=False)
        assert (store.info(both, "m").count, store.info(both, "n").count) == (3, 7)
    store.sync(both)
    assert store.info(both, "m").count == 7


def test_a_snapshot_is_written_once_snapshot_every_changes_piled_up(
    catalog: Catalog, collection: CollectionRecord, index_settings: IndexSettings, writer: Writer
) -> None:
    store = IndexStore(catalog, replace(index_settings, snapshot_every=10))
    path = store.path_for(collection.id, "m")
    try:
        writer.add(4)
        store.sync(collection)  # built from the catalog: saved at once
        store.wait_idle()
        saved = catalog.collection_seq(collection.id)
        assert read_snapshot(path)[0]["last_seq"] == saved
        writer.add(9)  # nine changes since: not yet
        store.sync(collection)
        store.wait_idle()
        assert read_snapshot(path)[0]["last_seq"] == saved
        writer.add(1)  # the tenth
        store.sync(collection)
        store.wait_idle()
        assert read_snapshot(path)[0]["last_seq"] == saved + 10
    finally:
        store.close(snapshot=False)


def test_a_failed_background_snapshot_is_logged_and_the_store_carries_on(
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A snapshot that cannot be written (here a full folder where the file belongs, which
    os.replace cannot replace) is logged; waiting for background work still returns, searches
    still answer from memory, and the next snapshot is written once the way is clear."""
    store = IndexStore(catalog, replace(index_settings, snapshot_every=5))
    path = store.path_for(collection.id, "m")
    try:
        writer.add(3)
        store.sync(collection)
        store.wait_idle()
        path.unlink()
        path.mkdir()
        (path / "keep").write_bytes(b"x")
        with caplog.at_level(logging.ERROR, logger="vizdex.search.index_store"):
            writer.add(5)
            store.sync(collection)  # five changes: a snapshot is queued, and fails
            store.wait_idle()
        assert [r.getMessage() for r in caplog.records] == ["background index task failed"]
        assert path.is_dir()
        assert_matches_catalog(store, catalog, collection)
        shutil.rmtree(path)
        writer.add(5)
        store.sync(collection)
        store.wait_idle()
        assert read_snapshot(path)[0]["last_seq"] == catalog.collection_seq(collection.id)
    finally:
        store.close(snapshot=False)


def test_reopening_an_up_to_date_file_uses_it_as_it_is(
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = IndexStore(catalog, index_settings)
    writer.add(50)
    first.sync(collection)
    first.snapshot(collection)
    first.close(snapshot=False)
    path = first.path_for(collection.id, "m")
    written = path.stat().st_ino  # a rewrite replaces the file: a new inode
    reopened = IndexStore(catalog, index_settings)
    builds: list[int] = []
    real_build = reopened.build_index

    def counting(*args: Any, **kwargs: Any) -> Any:
        builds.append(1)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(reopened, "build_index", counting)
    try:
        reopened.open_collection(collection)
        reopened.wait_idle()
        assert builds == []  # loaded, not rebuilt from the catalog
        assert path.stat().st_ino == written  # and not saved again: nothing changed
        assert_matches_catalog(reopened, catalog, collection)
    finally:
        reopened.close(snapshot=False)


def test_a_search_does_not_wait_for_a_busy_writer(
    store: IndexStore, catalog: Catalog, collection: CollectionRecord, writer: Writer
) -> None:
    writer.add(5)
    store.sync(collection)
    writer.add(3)  # the catalog moves on while a writer holds the index
    query = np.ones((1, DIM), np.float32)
    counts: list[int] = []
    busy = store._slot(collection, "m").mutex
    with busy:
        searching = threading.Thread(
            target=lambda: counts.append(store.search(collection, "m", query, 10).count)
        )
        searching.start()
        searching.join(timeout=30)
        answered = not searching.is_alive()
    searching.join()
    assert answered and counts == [5]  # the index as it was: the writer brings it up to date
    assert store.search(collection, "m", query, 10).count == 8


def test_snapshots_queue_one_at_a_time_rather_than_pile_up(
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = IndexStore(catalog, replace(index_settings, snapshot_every=1))
    entered, gate = threading.Event(), threading.Event()
    writes: list[int] = []
    real_write = write_index_file

    def slow_write(slot: Any) -> bool:
        writes.append(slot.seq)
        entered.set()
        gate.wait(30)
        return real_write(slot)

    monkeypatch.setattr(index_store_module, "write_index_file", slow_write)
    try:
        writer.add(2)
        store.sync(collection)  # built: its first snapshot starts, and hangs on the gate
        assert entered.wait(30)
        for _ in range(5):  # every change wants a snapshot: one more is queued, no more
            writer.add(1)
            store.sync(collection)
        gate.set()
        store.wait_idle()
        assert len(writes) == 2
        assert read_snapshot(store.path_for(collection.id, "m"))[0]["last_seq"] == (
            catalog.collection_seq(collection.id)
        )
    finally:
        gate.set()
        store.close(snapshot=False)


def test_background_work_of_different_collections_runs_one_task_at_a_time(
    catalog: Catalog,
    index_settings: IndexSettings,
    unit_vectors: UnitVectors,
    new_image: ImageFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Snapshots (and retrains) are heavy: they queue behind each other, whatever the index."""
    store = IndexStore(catalog, replace(index_settings, snapshot_every=1))
    first_in, second_in, gate = threading.Event(), threading.Event(), threading.Event()
    real_write = write_index_file

    def held_write(slot: Any) -> bool:
        (second_in if first_in.is_set() else first_in).set()
        gate.wait(30)
        return real_write(slot)

    monkeypatch.setattr(index_store_module, "write_index_file", held_write)
    try:
        for name in ("one", "two"):
            collection = catalog.create_collection(name, ["m"])
            Writer(catalog, collection, unit_vectors, new_image).add(3)
            store.sync(collection)  # built: its snapshot is queued
            if name == "one":
                assert first_in.wait(30)
        # The second snapshot waits for the first: nothing lets it in while the first holds.
        assert not second_in.wait(2)
        gate.set()
        store.wait_idle()
        assert second_in.is_set()
    finally:
        gate.set()
        store.close(snapshot=False)


def test_an_index_with_no_vector_yet_answers_every_query_with_nothing(
    store: IndexStore, collection: CollectionRecord
) -> None:
    queries = np.ones((2, DIM), np.float32)
    found = store.search(collection, "m", queries, 3)
    assert (found.count, found.approximate) == (0, False)
    assert found.ids.shape == (2, 3) and (found.ids == -1).all()
    assert np.isneginf(found.scores).all()
    within = store.range_search(collection, "m", queries, 0.5)
    assert within.lims.tolist() == [0, 0, 0]
    assert (within.ids.size, within.scores.size) == (0, 0)
    assert (within.approximate, within.nprobe) == (False, 0)
    assert store.ids(collection, "m").tolist() == []
    assert store.dim(collection, "m") is None
    info = store.info(collection, "m")  # reported as an empty exact index of no dimension yet
    assert (info.kind, info.count, info.dim, info.nlist, info.nprobe) == ("flat", 0, 0, 0, 0)


def test_a_range_search_finds_every_vector_above_the_threshold(
    store: IndexStore, catalog: Catalog, collection: CollectionRecord, writer: Writer
) -> None:
    ids = writer.add(12)
    store.sync(collection)
    _, vectors = catalog.get_vectors(collection.id, "m", ids[:2])
    found = store.range_search(collection, "m", vectors, 0.999)
    assert found.lims.tolist() == [0, 1, 2]  # unit vectors in 16-D: only each one itself
    assert found.ids.tolist() == ids[:2]
    assert (found.approximate, found.nprobe) == (False, 0)


def test_an_ivf_file_without_a_recorded_nprobe_range_searches_one_list(
    catalog: Catalog, collection: CollectionRecord, index_settings: IndexSettings, writer: Writer
) -> None:
    """Index files from before nprobe was recorded read as nprobe 0: a range search over such an
    IVF index probes one list (FAISS's own default) and says so, rather than reporting 0."""
    settings = replace(index_settings, exact_max=100)
    store = IndexStore(catalog, settings)
    ids = writer.add(300)
    store.sync(collection)
    store.wait_idle()
    assert store.info(collection, "m").kind == "ivf"
    store.close(snapshot=True)
    path = store.path_for(collection.id, "m")
    header, payload = read_snapshot(path)
    del header["spec"]["nprobe"]
    write_snapshot(path, header, payload)
    reopened = IndexStore(catalog, settings)
    try:
        reopened.sync(collection)
        _, vectors = catalog.get_vectors(collection.id, "m", ids[:2])
        found = reopened.range_search(collection, "m", vectors, 0.999)
        assert (found.approximate, found.nprobe) == (True, 1)
        assert found.ids.tolist() == ids[:2]  # each vector's own list is the one probed
    finally:
        reopened.close(snapshot=False)


def test_dropping_a_model_whose_index_was_never_saved_is_quiet(
    store: IndexStore, collection: CollectionRecord, writer: Writer
) -> None:
    """A model removed before its index was ever built or saved (no file): nothing to remove."""
    path = store.path_for(collection.id, "m")
    store.drop_model(collection.id, "m")
    writer.add(2)
    store.sync(collection)
    store.wait_idle()
    assert path.exists()
    store.drop_model(collection.id, "m")
    assert not path.exists()
    store.drop_model(collection.id, "m")  # again, its file already gone


class WritingStore(IndexStore):
    """A store after whose next sync, once armed, one more image lands in the catalog, as if
    another process wrote just after this one caught up."""

    def __init__(self, catalog: Catalog, settings: IndexSettings, writer: Writer) -> None:
        super().__init__(catalog, settings)
        self.writer = writer
        self.write_after_next_sync = False

    def sync(self, collection: CollectionRecord, **options: Any) -> None:
        super().sync(collection, **options)
        if self.write_after_next_sync:
            self.write_after_next_sync = False
            self.writer.add(1)


def test_reaching_a_sequence_number_catches_the_index_up(
    catalog: Catalog, collection: CollectionRecord, index_settings: IndexSettings, writer: Writer
) -> None:
    store = WritingStore(catalog, index_settings, writer)
    try:
        writer.add(3)
        start = store.info(collection, "m").last_seq  # loaded now; later writes need a sync
        writer.add(2)
        head = catalog.collection_seq(collection.id)
        # The first sync gets there: no time left to wait is no reason to say no.
        assert store.reach(collection, head, 0.0)
        assert store.info(collection, "m").last_seq == head > start
        # A number the catalog hands out only after the first try is waited for...
        store.write_after_next_sync = True
        assert store.reach(collection, head + 1, 60.0)
        assert store.info(collection, "m").count == 6
        # ...and one it never hands out is not reached.
        assert not store.reach(collection, head + 2, 0.1)
        # A number the catch-up passes (the index lands beyond it) is reached at once too.
        passed = catalog.collection_seq(collection.id)
        writer.add(2)
        assert store.info(collection, "m").last_seq == passed  # behind: the next sync catches up
        assert store.reach(collection, passed + 1, 0.0)
        assert store.info(collection, "m").last_seq == catalog.collection_seq(collection.id)
    finally:
        store.close(snapshot=False)


def test_a_sync_gives_up_on_a_busy_writer_at_its_deadline(
    store: IndexStore, catalog: Catalog, collection: CollectionRecord, writer: Writer
) -> None:
    writer.add(3)
    store.sync(collection)
    writer.add(2)
    busy = store._slot(collection, "m").mutex
    held, release, released = threading.Event(), threading.Event(), threading.Event()

    def hold() -> None:  # a writer busy with the index until told to stop (or 60 s)
        with busy:
            held.set()
            release.wait(60)
            released.set()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        store.sync(collection, timeout_s=0.1)
        assert not released.is_set()  # it gave up while the writer still held the index
    finally:
        release.set()
        holder.join()
    store.sync(collection, timeout_s=30)
    assert store.info(collection, "m").count == 5


def test_waiting_for_background_work_gives_up_after_its_timeout(store: IndexStore) -> None:
    release = threading.Event()

    def busy() -> None:
        release.wait(60)

    store._submit(busy)
    try:
        with pytest.raises(TimeoutError):
            store.wait_idle(timeout=0.05)
    finally:
        release.set()
    store.wait_idle(timeout=60)


@contextmanager
def selects(catalog: Catalog) -> Iterator[list[str]]:
    """The SELECT statements the catalog's engine runs inside the block (not SQLite's BEGIN)."""
    statements: list[str] = []

    def count(*args: Any) -> None:
        if str(args[2]).lstrip().upper().startswith("SELECT"):
            statements.append(str(args[2]))

    event.listen(catalog.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(catalog.engine, "before_cursor_execute", count)


def test_a_query_on_an_up_to_date_index_only_asks_the_catalog_its_position(
    store: IndexStore, catalog: Catalog, collection: CollectionRecord, writer: Writer
) -> None:
    writer.add(4)
    store.sync(collection)
    with selects(catalog) as statements:
        store.search(collection, "m", np.ones((1, DIM), np.float32), 3)
    assert len(statements) == 1, statements  # collection_seq: nothing newer to read
    with selects(catalog) as statements:
        store.sync(collection)  # a writer's catch-up finds nothing to apply either
    assert len(statements) == 1, statements
    writer.add(1)
    with selects(catalog) as statements:
        assert store.search(collection, "m", np.ones((1, DIM), np.float32), 10).count == 5
    assert len(statements) > 1, statements  # behind: the query read the changes too (control)


def test_a_sync_that_races_shutdown_neither_fails_nor_queues_work(
    catalog: Catalog, collection: CollectionRecord, index_settings: IndexSettings, writer: Writer
) -> None:
    """A request still running while the store closes may catch an index up: the snapshot
    that would schedule is dropped quietly, not refused by the stopped worker."""
    store = IndexStore(catalog, replace(index_settings, snapshot_every=1))
    writer.add(2)
    store.sync(collection)
    store.wait_idle(timeout=60)
    path = store.path_for(collection.id, "m")
    saved = read_snapshot(path)[0]["last_seq"]
    store.close(snapshot=False)
    writer.add(3)
    store.sync(collection)  # one change is enough to want a snapshot (snapshot_every=1)
    assert store.info(collection, "m").count == 5
    assert read_snapshot(path)[0]["last_seq"] == saved


def test_the_snapshot_floor_is_what_every_saved_file_of_the_collection_includes(
    store: IndexStore, catalog: Catalog, two_models: tuple[CollectionRecord, Writer]
) -> None:
    both, adder = two_models
    for _ in range(3):
        adder.add(2)
    head = catalog.collection_seq(both.id)
    assert head > 3  # not to be mistaken for a file generation
    assert store.snapshot_floor(both) == head
    for model in ("m", "n"):
        assert read_snapshot(store.path_for(both.id, model))[0]["last_seq"] == head


def test_following_catches_loaded_indexes_up_and_forgets_deleted_collections(
    store: IndexStore, catalog: Catalog, collection: CollectionRecord, writer: Writer
) -> None:
    other = catalog.create_collection("other", ["m"])
    writer.add(4)
    store.snapshot(collection)
    store.open_collection(other)
    path = store.path_for(collection.id, "m")
    assert path.exists()
    writer.add(3)  # written elsewhere: nobody here syncs
    store.follow()
    assert store.info(collection, "m").count == 7
    assert store.applied_seqs() == {
        collection.id: catalog.collection_seq(collection.id),
        other.id: catalog.collection_seq(other.id),
    }
    catalog.delete_collection("photos")  # by another replica
    store.follow()
    assert not path.parent.exists()
    assert set(store.applied_seqs()) == {other.id}


def test_following_in_the_background_never_keeps_the_process_alive(
    store: IndexStore, catalog: Catalog, collection: CollectionRecord, writer: Writer
) -> None:
    writer.add(2)
    store.open_collection(collection)
    store.start_following(0.01)
    (follower,) = [t for t in threading.enumerate() if t.name == "vizdex-index-follower"]
    assert follower.daemon  # a process that never calls close still exits
    writer.add(3)  # written elsewhere: the follower brings it in, no query asks
    head = catalog.collection_seq(collection.id)
    deadline = time.monotonic() + 60
    while store.applied_seqs()[collection.id] < head and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.applied_seqs()[collection.id] == head
    store.close(snapshot=False)
    assert not follower.is_alive()


@pytest.mark.parametrize(
    "claim", [{"collection_id": +1}, {"collection_id": -1}, {"model": "n"}], ids=str
)
def test_a_snapshot_that_says_it_is_another_indexs_is_set_aside_and_rebuilt(
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
    claim: dict[str, Any],
) -> None:
    """A well-formed file copied from another collection's or model's place is not used."""
    header, payload, path = saved_snapshot(catalog, collection, index_settings, writer, 20)
    if "collection_id" in claim:
        header["collection_id"] = collection.id + claim["collection_id"]
    else:
        header["model"] = claim["model"]
    write_snapshot(path, header, payload)
    reopened = IndexStore(catalog, index_settings)
    try:
        assert_matches_catalog(reopened, catalog, collection)
        aside = [p.name for p in path.parent.iterdir() if ".corrupt" in p.name]
        assert aside == [path.name + ".corrupt"]
    finally:
        reopened.close(snapshot=False)
