"""Source-path updates racing an ingest, on a real SQLite file and a real PostgreSQL, from threads
and from processes.

The incremental indexer moves and touches images (``update_sources``) while other writers add,
re-embed, retag and delete images of the same collection. Whatever the interleaving: no writer may
fail with "database is locked" (nor with a deadlock on PostgreSQL), no reader may see one update
half applied, no update may undo another's columns, and no recorded path may point at an image
that is gone.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.support.postgres import DATABASES, database_url_for
from vizdex.search import (
    Catalog,
    CatalogSettings,
    ImageRecord,
    NewImage,
    SearchSettings,
    SourceKind,
    SourceUpdate,
    images_at_sources,
    update_sources,
)


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, data_dir: Path) -> str:
    return database_url_for(request, data_dir)


SEEDED = 40
ROUNDS = 30
DIM = 8


def _vector(seed: int) -> np.ndarray:
    row = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return np.asarray(row / np.linalg.norm(row), np.float32)


def _image(key: str, path: str) -> NewImage:
    return NewImage(
        sha256=hashlib.sha256(key.encode()).hexdigest(),
        width=64,
        height=48,
        format="png",
        byte_size=1234,
        vectors={"clip": _vector(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))},
        source_kind=SourceKind.PATH,
        source_uri=path,
        original_name=Path(path).name,
        source_size=0,
        source_mtime_ns=0,
    )


def _path(stamp: int, position: int) -> str:
    return f"/photos/{stamp}/{position}.jpg"


def _stamp(mover: int, round_: int) -> int:
    return mover * 1000 + round_ + 1


def _move_all(
    catalog: Catalog, collection_id: int, ids: list[int], mover: int, counts: list[int]
) -> None:
    """Every seeded image to a new folder, one transaction per round; stamps size and mtime."""
    for round_ in range(ROUNDS):
        stamp = _stamp(mover, round_)
        updates = [
            SourceUpdate(image_id, _path(stamp, position), f"{position}.jpg", stamp, stamp)
            for position, image_id in enumerate(ids)
        ]
        counts.append(update_sources(catalog, collection_id, updates))


Ingested = tuple[list[int], dict[int, int]]


def _ingest(catalog: Catalog, collection_id: int, ids: list[int], worker: int) -> Ingested:
    """Adds new images, re-embeds, retags and deletes seeded ones.

    Returns the deleted ids and, per retagged image, the last tag it was given.
    """
    deleted: list[int] = []
    tags: dict[int, int] = {}
    for step in range(ROUNDS):
        fresh = [_image(f"new-{worker}-{step}-{i}", f"/new/{worker}/{i}.jpg") for i in range(4)]
        catalog.add_images(collection_id, fresh)
        target = ids[(worker * 7 + step * 3) % len(ids)]
        if target not in deleted:
            catalog.put_embeddings(collection_id, "clip", [target], _vector(step)[None, :])
            catalog.update_image(collection_id, target, metadata={"step": step})
            tags[target] = step
        if step % 6 == 5:
            victim = ids[(worker * 11 + step) % len(ids)]
            if catalog.delete_images(collection_id, [victim]):
                deleted.append(victim)
    return deleted, tags


def _check_one_snapshot(records: dict[int, ImageRecord], ids: list[int]) -> None:
    """One read sees every surviving seeded image at the same update: never half of one."""
    stamps = {record.source_size for record in records.values()}
    assert len(stamps) == 1, f"a read saw several updates at once: {sorted(stamps, key=str)}"
    for position, image_id in enumerate(ids):
        record = records.get(image_id)
        if record is None:
            continue
        stamp = record.source_size
        assert record.source_mtime_ns == stamp
        if stamp:  # 0: not moved yet
            assert record.source_uri == _path(stamp, position)
            assert record.original_name == f"{position}.jpg"


def _check_final(
    catalog: Catalog, collection_id: int, ids: list[int], ingested: Ingested, movers: int
) -> None:
    deleted, tags = ingested
    survivors = catalog.get_images(collection_id, ids)
    assert set(survivors) == set(ids) - set(deleted)
    _check_one_snapshot(survivors, ids)
    final = {_stamp(mover, ROUNDS - 1) for mover in range(movers)}
    assert {record.source_size for record in survivors.values()} <= final
    # Every path any update ever wrote resolves only to images that still exist.
    every_path = [
        _path(_stamp(mover, round_), position)
        for mover in range(movers)
        for round_ in range(ROUNDS)
        for position in range(len(ids))
    ]
    found = images_at_sources(catalog, collection_id, every_path)
    pointed = {row.image_id for rows in found.values() for row in rows}
    assert pointed == set(survivors)
    # Source updates never undid a concurrent retag or re-embedding, nor the other way round.
    for image_id, record in survivors.items():
        assert dict(record.metadata) == ({"step": tags[image_id]} if image_id in tags else {})
    ids_with_vectors, _ = catalog.get_vectors(collection_id, "clip", list(survivors))
    assert sorted(ids_with_vectors.tolist()) == sorted(survivors)


def _seed(catalog: Catalog) -> tuple[int, list[int]]:
    collection = catalog.create_collection("photos", ["clip"])
    added = catalog.add_images(
        collection.id, [_image(f"seed-{i}", f"/photos/0/{i}.jpg") for i in range(SEEDED)]
    )
    return collection.id, [outcome.id for outcome in added]


def _run_threads(targets: list[Callable[[], None]]) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as error:  # reported by the caller
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_source_updates_and_an_ingest_in_threads_never_interleave_badly(
    catalog: Catalog,
) -> None:
    collection_id, ids = _seed(catalog)
    counts: list[list[int]] = [[], []]
    ingested: list[Ingested] = []
    done = threading.Event()

    def ingest() -> None:
        try:
            ingested.append(_ingest(catalog, collection_id, ids, 0))
        finally:
            done.set()

    def read() -> None:
        while not done.is_set():
            _check_one_snapshot(catalog.get_images(collection_id, ids), ids)

    errors = _run_threads(
        [
            lambda: _move_all(catalog, collection_id, ids, 0, counts[0]),
            lambda: _move_all(catalog, collection_id, ids, 1, counts[1]),
            ingest,
            read,
        ]
    )
    assert not errors, errors
    deleted = ingested[0][0]
    # Each round changed exactly the seeded images that still existed: fewer only after deletes.
    for mover in counts:
        assert len(mover) == ROUNDS
        assert mover == sorted(mover, reverse=True) and mover[0] <= SEEDED
        assert mover[-1] >= SEEDED - len(deleted)
    _check_final(catalog, collection_id, ids, ingested[0], movers=2)


def _process_move(url: str, collection_id: int, ids: list[int], mover: int) -> list[int]:
    catalog = Catalog.open(CatalogSettings(database_url=url))
    try:
        counts: list[int] = []
        _move_all(catalog, collection_id, ids, mover, counts)
        return counts
    finally:
        catalog.close()


def _process_ingest(url: str, collection_id: int, ids: list[int], worker: int) -> Ingested:
    catalog = Catalog.open(CatalogSettings(database_url=url))
    try:
        return _ingest(catalog, collection_id, ids, worker)
    finally:
        catalog.close()


def test_source_updates_and_an_ingest_in_processes_never_interleave_badly(
    search_settings: SearchSettings, catalog: Catalog
) -> None:
    movers = 2
    collection_id, ids = _seed(catalog)
    url = search_settings.catalog.database_url
    spawn = multiprocessing.get_context("spawn")  # fresh engines: nothing inherited mid-use
    with ProcessPoolExecutor(max_workers=movers + 1, mp_context=spawn) as pool:
        moving = [
            pool.submit(_process_move, url, collection_id, ids, mover) for mover in range(movers)
        ]
        ingesting = pool.submit(_process_ingest, url, collection_id, ids, 1)
        ingested = ingesting.result()  # re-raises a child's error, e.g. "database is locked"
        counts = [future.result() for future in moving]
    for mover in counts:
        assert mover == sorted(mover, reverse=True) and mover[-1] >= SEEDED - len(ingested[0])
    _check_final(catalog, collection_id, ids, ingested, movers=movers)
