"""Re-ranked indexes kept with the catalog: their own files, memory-mapped on reopen, the exact
vectors' file checked and rebuilt when torn or stale, and a background retrain into the
compressed kind."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import vizdex.search.index_store as index_store_module
import vizdex.search.vector_file as vector_file_module
from tests.conftest import ImageFactory, UnitVectors
from tests.integration.test_index_store import GatedStore, Writer, saved_snapshot
from tests.support.small_disk import fill, small_disk
from vizdex.core.errors import storage_full
from vizdex.search.catalog import Catalog
from vizdex.search.index import COMPRESSED_MIN_COUNT, RERANK_DEPTHS, IndexPolicy, VectorIndex
from vizdex.search.index_file import read_snapshot, write_snapshot
from vizdex.search.index_slot import index_file_name
from vizdex.search.index_store import IndexStore
from vizdex.search.records import CollectionRecord
from vizdex.search.settings import IndexSettings, SearchSettings
from vizdex.search.vector_file import VectorFile
from vizdex.search.vector_source import VectorSource

DIM = 32
NO_PAYLOAD = np.zeros(0, dtype=np.uint8)  # a snapshot whose index is a file of its own
FACTORY = "IVF16,PQ8"  # 8 bytes per 32-d vector: lossy, so re-ranked


@pytest.fixture
def index_settings(search_settings: SearchSettings) -> IndexSettings:
    return replace(search_settings.index, snapshot_every=1_000_000, device="cpu")


@pytest.fixture
def collection(catalog: Catalog) -> CollectionRecord:
    return catalog.create_collection("photos", ["m"], index_factory=FACTORY, exact_max=0)


@pytest.fixture
def writer(
    catalog: Catalog,
    collection: CollectionRecord,
    unit_vectors: UnitVectors,
    new_image: ImageFactory,
) -> Writer:
    return Writer(catalog, collection, unit_vectors, new_image, dim=DIM)


@pytest.fixture
def store(catalog: Catalog, index_settings: IndexSettings) -> Iterator[IndexStore]:
    opened = IndexStore(catalog, index_settings)
    yield opened
    opened.close(snapshot=False)


def _catalog_vectors(catalog: Catalog, collection: CollectionRecord) -> tuple[Any, Any]:
    seq = catalog.collection_seq(collection.id)
    batches = list(catalog.iter_embeddings(collection.id, "m", upto_seq=seq))
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def assert_reranked_and_consistent(
    store: IndexStore, catalog: Catalog, collection: CollectionRecord
) -> None:
    """Index ids, exact-vector ids and catalog ids agree, and searches score exactly: a stored
    vector finds itself at cosine 1 (PQ alone would score it well below)."""
    ids, vectors = _catalog_vectors(catalog, collection)
    index = store._slot(collection, "m").index
    assert index is not None and index.spec.rerank in {10 * depth for depth in RERANK_DEPTHS}
    assert sorted(index.ids().tolist()) == sorted(ids.tolist())
    held = index.exact_ids()
    assert held is not None and sorted(held.tolist()) == sorted(ids.tolist())
    sample = np.arange(0, len(ids), max(1, len(ids) // 200))
    output = store.search(collection, "m", vectors[sample], 5)
    found_self = output.ids[:, 0] == ids[sample]
    assert found_self.mean() >= 0.95
    np.testing.assert_allclose(output.scores[found_self, 0], 1.0, atol=1e-5)


def _files(store: IndexStore, collection: CollectionRecord, suffix: str) -> list[Path]:
    return sorted(store.path_for(collection.id, "m").parent.glob(f"*{suffix}"))


def test_a_pq_factory_index_is_reranked_saved_as_files_and_mapped_again_on_reopen(
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
    unit_vectors: UnitVectors,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = IndexStore(catalog, index_settings)
    first = writer.add(1200)
    store.sync(collection)
    info = store.info(collection, "m")
    assert (info.kind, info.count) == ("factory", 1200)
    store.snapshot(collection)
    header, payload = read_snapshot(store.path_for(collection.id, "m"))
    assert payload.size == 0  # the index is a file of its own, memory-mapped on reopen
    assert [p.name for p in _files(store, collection, ".faiss")] == [header["index_file"]]
    assert [p.name for p in _files(store, collection, ".f16")] == [header["vector_file"]]

    # Changes after the snapshot: replayed on reopen, into the index and the exact vectors.
    added = writer.add(150)
    catalog.delete_images(collection.id, first[:40] + added[:10])
    catalog.put_embeddings(collection.id, "m", first[100:110], unit_vectors(10, DIM))
    store.sync(collection)
    store.close(snapshot=False)

    builds: list[int] = []
    real = IndexStore.build_index

    def counting(self: IndexStore, *args: Any, **kwargs: Any) -> Any:
        builds.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(index_store_module.IndexStore, "build_index", counting)
    reopened = IndexStore(catalog, index_settings)
    try:
        assert reopened.info(collection, "m").count == 1200 + 150 - 50
        assert_reranked_and_consistent(reopened, catalog, collection)
        assert builds == []  # loaded and replayed, never rebuilt
        reopened.snapshot(collection)
    finally:
        reopened.close(snapshot=False)
    # An up-to-date snapshot opens mapped and stays mapped while nothing changes.
    again = IndexStore(catalog, index_settings)
    try:
        index = again._slot(collection, "m").index
        assert index is not None and index.mapped
        assert_reranked_and_consistent(again, catalog, collection)
        assert builds == []
    finally:
        again.close(snapshot=False)
    assert len(_files(again, collection, ".faiss")) == len(_files(again, collection, ".f16")) == 1


def _torn(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _bad_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[30] ^= 0x5A
    path.write_bytes(bytes(data))


def _committed_elsewhere(path: Path) -> None:
    """The crash between committing the vector file and renaming the new snapshot in: the file
    says a later sequence number than the snapshot that names it."""
    exact = VectorFile(path, collection_id=1, model="m", dim=DIM)
    exact.commit(exact.last_seq + 7)
    exact.close()


def _saved_snapshot(
    catalog: Catalog, collection: CollectionRecord, index_settings: IndexSettings, writer: Writer
) -> tuple[dict[str, Any], Path]:
    """1000 vectors indexed and snapshotted, the store closed: the snapshot's header and folder."""
    header, _, path = saved_snapshot(catalog, collection, index_settings, writer, 1000)
    return header, path.parent


FLIPPED_ROW = 5


def _flipped_row(path: Path) -> int:
    """One byte of one committed row changed (a bit rot, a bad sector): the header is intact.
    Returns the image id whose row it was."""
    exact = VectorFile(path, collection_id=1, model="m", dim=DIM)
    image_id = int(exact.live_ids()[FLIPPED_ROW])
    vectors_at = vector_file_module._layout(DIM, exact.capacity)[1]
    exact.close()
    with open(path, "r+b") as handle:
        handle.seek(vectors_at + 2 * DIM * FLIPPED_ROW + 3)
        byte = handle.read(1)[0]
        handle.seek(-1, 1)
        handle.write(bytes([byte ^ 0x10]))
    return image_id


@pytest.mark.parametrize(
    "damage",
    [_torn, _bad_header, _committed_elsewhere, Path.unlink, _flipped_row],
    ids=["torn", "bad-header", "other-seq", "missing", "flipped-row-byte"],
)
def test_a_damaged_vector_file_is_detected_and_rebuilt_from_the_catalog(
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
    damage: Any,
) -> None:
    assert collection.id == 1
    header, folder = _saved_snapshot(catalog, collection, index_settings, writer)
    damage(folder / header["vector_file"])

    reopened = IndexStore(catalog, index_settings)
    try:
        assert_reranked_and_consistent(reopened, catalog, collection)
        index = reopened._slot(collection, "m").index
        assert index is not None and index.exact_file is not None
        assert index.exact_file.name != header["vector_file"]  # a new file from the catalog
        reopened.wait_idle(timeout=60)  # the snapshot due after the rebuild
        fresh, _ = read_snapshot(reopened.path_for(collection.id, "m"))
        assert fresh["vector_file"] == index.exact_file.name
        assert fresh["index_file"] != header["index_file"]
    finally:
        reopened.close(snapshot=False)
    # Exactly one set of files is left (a damaged one may stay aside as *.corrupt).
    assert [p.name for p in _files(reopened, collection, ".f16")] == [fresh["vector_file"]]
    assert [p.name for p in _files(reopened, collection, ".faiss")] == [fresh["index_file"]]


def test_a_flipped_row_found_by_a_search_is_rebuilt_from_the_catalog_in_the_background(
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A large file is verified at open only in part: the rest is checked block by block as
    searches first read it. The damaged block's rows keep their approximate scores meanwhile."""
    store = IndexStore(catalog, index_settings)
    writer.add(1000)
    store.sync(collection)
    store.snapshot(collection)
    store.close(snapshot=False)
    header, _ = read_snapshot(store.path_for(collection.id, "m"))
    damaged = _flipped_row(store.path_for(collection.id, "m").with_name(header["vector_file"]))
    monkeypatch.setattr(vector_file_module, "VERIFY_AT_OPEN", 0)  # as if it were 10M rows

    reopened = IndexStore(catalog, index_settings)
    try:
        index = reopened._slot(collection, "m").index
        assert index is not None and index.exact_file is not None
        assert index.exact_file.name == header["vector_file"]  # opened: not checked yet
        assert not index.exact_damaged
        ids, vectors = _catalog_vectors(catalog, collection)
        query = vectors[ids.tolist().index(damaged)][None, :]
        output = reopened.search(collection, "m", query, 5)
        assert damaged in output.ids[0]  # still found, by its approximate score
        assert index.exact_damaged  # and the block was caught
        reopened.wait_idle(timeout=60)  # the rebuild from the catalog, then the snapshot
        fixed = reopened._slot(collection, "m").index
        assert fixed is not None and fixed.exact_file is not None
        assert fixed.exact_file.name != header["vector_file"] and not fixed.exact_damaged
        assert_reranked_and_consistent(reopened, catalog, collection)
        output = reopened.search(collection, "m", query, 5)
        assert output.ids[0, 0] == damaged
        np.testing.assert_allclose(output.scores[0, 0], 1.0, atol=1e-5)  # exact again
        fresh, _ = read_snapshot(reopened.path_for(collection.id, "m"))
        assert fresh["vector_file"] == fixed.exact_file.name
    finally:
        reopened.close(snapshot=False)


def test_a_row_spoiled_while_mapped_keeps_its_image_found_and_is_rebuilt(
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
) -> None:
    """Blocks are checked once; a checked row that reads back as NaN later (the file written to
    while the server has it mapped, or a bad page read again from disk) must not make its image
    vanish from searches: it keeps its approximate score and the file is rebuilt."""
    store = IndexStore(catalog, index_settings)
    try:
        writer.add(1000)
        store.sync(collection)
        ids, vectors = _catalog_vectors(catalog, collection)
        index = store._slot(collection, "m").index
        assert index is not None and index.exact_file is not None
        store.search(collection, "m", vectors, 1)  # every block read and checked
        exact = VectorFile(index.exact_file, collection_id=1, model="m", dim=DIM)
        row = int(exact.positions(ids[:1])[0])
        vectors_at = vector_file_module._layout(DIM, exact.capacity)[1]
        exact.close()
        with open(index.exact_file, "r+b") as handle:  # in place: the mapping sees it
            handle.seek(vectors_at + 2 * DIM * row)
            handle.write(b"\xff\x7f" * DIM)  # float16 NaN in every component
        output = store.search(collection, "m", vectors[:1], 5)
        assert ids[0] in output.ids[0] and np.isfinite(output.scores).all()
        assert index.exact_damaged
        store.wait_idle(timeout=60)  # rebuilt from the catalog
        output = store.search(collection, "m", vectors[:1], 5)
        assert output.ids[0, 0] == ids[0]
        np.testing.assert_allclose(output.scores[0, 0], 1.0, atol=1e-5)
        assert_reranked_and_consistent(store, catalog, collection)
    finally:
        store.close(snapshot=False)


def test_growth_past_compress_min_retrains_into_the_compressed_kind_without_pausing_queries(
    catalog: Catalog,
    index_settings: IndexSettings,
    unit_vectors: UnitVectors,
    new_image: ImageFactory,
) -> None:
    collection = catalog.create_collection("big", ["m"], exact_max=0)
    writer = Writer(catalog, collection, unit_vectors, new_image)
    settings = replace(index_settings, compress_min=COMPRESSED_MIN_COUNT)
    store = GatedStore(catalog, settings)
    errors: list[BaseException] = []
    stop = threading.Event()
    done = [0]

    def searcher() -> None:
        queries = unit_vectors(4, 64)
        while not stop.is_set():
            try:
                assert (store.search(collection, "m", queries, 5).ids >= 0).all()
                done[0] += 1
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)
                return

    thread = threading.Thread(target=searcher)
    try:
        first = writer.add(6000, dim=64)
        store.release.set()  # the first build (IVF) passes the gate
        store.sync(collection)
        store.wait_idle(timeout=300)
        store.release.clear()
        store.built.clear()
        assert store.info(collection, "m").kind == "ivf"
        thread.start()
        writer.add(COMPRESSED_MIN_COUNT - 6000 + 100, dim=64)
        store.sync(collection)  # past compress_min: a retrain into IVF-PQ in the background
        assert store.built.wait(timeout=300)
        assert store.info(collection, "m").retraining
        # Meanwhile the IVF index keeps serving and following writes.
        during = writer.add(200, dim=64)
        catalog.delete_images(collection.id, first[:30] + during[:5])
        store.sync(collection)
        searched = done[0]
        store.release.set()
        store.wait_idle(timeout=300)
        stop.set()
        thread.join(timeout=30)
        assert not errors and done[0] > searched
        info = store.info(collection, "m")
        assert info.kind == "ivfpq" and not info.retraining
        assert info.count == COMPRESSED_MIN_COUNT + 100 + 200 - 35
        assert_reranked_and_consistent(store, catalog, collection)  # writes made meanwhile too
        header, _ = read_snapshot(store.path_for(collection.id, "m"))
        assert header["spec"]["kind"] == "ivfpq" and header["count"] == info.count
        # Online changes after the swap reach the compressed index and its exact vectors.
        later = writer.add(50, dim=64)
        catalog.delete_images(collection.id, later[:5] + first[30:35])
        store.sync(collection)
        assert_reranked_and_consistent(store, catalog, collection)
    finally:
        stop.set()
        store.release.set()
        if thread.is_alive():
            thread.join(timeout=30)
        store.close(snapshot=False)


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize("which", ["index_file", "vector_file"])
@pytest.mark.parametrize("damage", [_fifo, _folder, Path.unlink], ids=["fifo", "folder", "missing"])
def test_something_else_where_a_snapshot_file_belongs_is_rebuilt_not_waited_on(
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
    damage: Any,
    which: str,
) -> None:
    """Found by the hardening round: a FIFO where the snapshot's index file belongs blocked the
    open, and the server's start with it, for ever; the vector file's refusal read "None"."""
    header, folder = _saved_snapshot(catalog, collection, index_settings, writer)
    damage(folder / header[which])
    opened: list[IndexStore] = []
    reopen = threading.Thread(
        target=lambda: opened.append(IndexStore(catalog, index_settings)), daemon=True
    )
    reopen.start()
    reopen.join(timeout=120)
    assert opened, "opening the store waits on what stands where its file belongs"
    try:
        assert_reranked_and_consistent(opened[0], catalog, collection)
        index = opened[0]._slot(collection, "m").index
        assert index is not None and index.exact_file is not None
        assert index.exact_file.name != header["vector_file"]  # rebuilt from the catalog
    finally:
        opened[0].close(snapshot=False)


def test_a_snapshot_naming_a_file_outside_its_folder_is_not_followed(
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
) -> None:
    """The index file a snapshot names must be its own, beside it: a name with a "/" (here a
    well-formed copy one folder down, under a name of the snapshot's own pattern) is refused and
    the index rebuilt from the catalog."""
    header, folder = _saved_snapshot(catalog, collection, index_settings, writer)
    snapshot = folder / index_file_name("m")
    sub = folder / f"{snapshot.with_suffix('').name}-sub"
    sub.mkdir()
    shutil.copy(folder / header["index_file"], sub / header["index_file"])
    write_snapshot(
        snapshot, {**header, "index_file": f"{sub.name}/{header['index_file']}"}, NO_PAYLOAD
    )
    reopened = IndexStore(catalog, index_settings)
    try:
        assert_reranked_and_consistent(reopened, catalog, collection)
        assert (folder / (snapshot.name + ".corrupt")).exists()
    finally:
        reopened.close(snapshot=False)


def test_dropping_a_model_removes_its_index_and_vector_files_and_no_other_models(
    catalog: Catalog, store: IndexStore, unit_vectors: UnitVectors, new_image: ImageFactory
) -> None:
    """``remove-model`` frees the disk of a re-ranked index: its snapshot, the ``.faiss`` and the
    ``.f16`` beside it. A model whose file stem begins with this one's keeps its files."""
    lookalike = index_file_name("m").removesuffix(".vdx") + "-x"  # its stem extends m's
    both = catalog.create_collection("both", ["m", lookalike], index_factory=FACTORY, exact_max=0)
    first, second = unit_vectors(1200, DIM), unit_vectors(1200, DIM)
    items = [new_image(("both", i), {"m": first[i], lookalike: second[i]}) for i in range(1200)]
    catalog.add_images(both.id, items)
    store.sync(both)
    store.snapshot(both)
    folder = store.path_for(both.id, "m").parent
    before = {path.name for path in folder.iterdir()}
    assert sum(name.endswith((".faiss", ".f16")) for name in before) == 4  # two models' pairs
    store.drop_model(both.id, "m")
    left = {path.name for path in folder.iterdir()}
    assert left == {name for name in before if name.startswith(lookalike)}
    assert sorted(name.rsplit(".", 1)[1] for name in left) == ["f16", "faiss", "vdx"]


class GatedBeforeBuild(IndexStore):
    """Holds a retrain (once ``armed``) before it builds, i.e. before its files exist."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.armed = False
        self.started = threading.Event()
        self.release = threading.Event()

    def build_index(
        self, source: VectorSource, policy: IndexPolicy, *, last_seq: int, dim: int
    ) -> VectorIndex:
        if self.armed:
            self.started.set()
            assert self.release.wait(timeout=60)
        return super().build_index(source, policy, last_seq=last_seq, dim=dim)


def test_dropping_a_model_during_its_retrain_leaves_none_of_the_retrains_files(
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
) -> None:
    """The retrain writes its new index and vector files while it builds, outside the locks
    that ``drop_model`` takes: a model removed before they exist must not keep them on disk
    (nothing would ever sweep them unless the model came back)."""
    store = GatedBeforeBuild(catalog, index_settings)
    try:
        writer.add(1200)
        store.sync(collection)
        folder = store.path_for(collection.id, "m").parent
        store.armed = True
        writer.add(1300)  # past twice what it was trained on: a retrain in the background
        store.sync(collection)
        assert store.started.wait(timeout=60)
        store.drop_model(collection.id, "m")
        store.release.set()
        store.wait_idle(timeout=120)
        assert sorted(p.name for p in folder.iterdir()) == []
    finally:
        store.release.set()
        store.close(snapshot=False)


def test_searches_keep_answering_from_the_index_while_its_disk_is_full(
    catalog: Catalog,
    collection: CollectionRecord,
    index_settings: IndexSettings,
    writer: Writer,
    unit_vectors: UnitVectors,
    tmp_path: Path,
) -> None:
    """New rows the full index disk cannot take fail their write (503 storage_full), but a
    search, which catches the index up first, must still answer from the index it has rather
    than fail on the same ENOSPC: reading needs no disk."""
    with small_disk(tmp_path / "disk", size_mb=16) as disk:
        store = IndexStore(catalog, replace(index_settings, directory=disk))
        try:
            writer.add(1200)
            store.sync(collection)
            filler = fill(disk)
            writer.add(3000)  # the catalog lives elsewhere: its rows commit
            with pytest.raises(OSError) as raised:
                store.sync(collection)
            assert storage_full(raised.value) is not None
            output = store.search(collection, "m", unit_vectors(3, DIM), 5)
            assert (output.ids >= 0).all() and output.count == 1200
            filler.unlink()  # room again: the next search catches up
            assert store.search(collection, "m", unit_vectors(1, DIM), 5).count == 4200
        finally:
            store.close(snapshot=False)
