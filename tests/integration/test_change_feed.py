"""The change feed never skips a commit, with writers in several processes committing late.

A follower (what every replica's FAISS cache is) reads ``collection_seq`` and replays
``changes(after, upto]``. That is only exact if no change numbered at most ``upto`` can still
commit after the follower read ``upto``: a writer that took number 7 but committed after the
writer that took number 8 would be skipped for ever. Writers of a collection hold its row lock from
taking their numbers until their commit, which forbids exactly that.

On PostgreSQL the test makes every writing transaction sleep a random while inside COMMIT (a
deferred constraint trigger, which runs at commit time, after the numbers were taken), so commits
would come out of number order if anything but the lock ordered them. Writers are separate
processes; the follower polls all the while, and at the end holds exactly the catalog's vectors.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from tests.support.postgres import DATABASES, database_url_for
from vizdex.search import Catalog, CatalogSettings, NewImage

WRITERS = 4
ROUNDS = 25
DIM = 8

# Once per transaction (a transaction-local setting remembers it), at COMMIT: sleep 0-40 ms.
SLOW_COMMIT = """
CREATE FUNCTION vizdex_test_slow_commit() RETURNS trigger AS $$
BEGIN
    IF current_setting('vizdex_test.slept', true) IS DISTINCT FROM txid_current()::text THEN
        PERFORM set_config('vizdex_test.slept', txid_current()::text, true);
        PERFORM pg_sleep(random() * 0.04);
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE CONSTRAINT TRIGGER slow_commit_embeddings AFTER INSERT ON embeddings
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION vizdex_test_slow_commit();
CREATE CONSTRAINT TRIGGER slow_commit_tombstones AFTER INSERT ON embedding_tombstones
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION vizdex_test_slow_commit();
"""


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, data_dir: Path) -> str:
    return database_url_for(request, data_dir)


def _vector(key: str) -> np.ndarray:
    seed = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    row = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return np.asarray(row / np.linalg.norm(row), np.float32)


def _image(key: str) -> NewImage:
    return NewImage(
        sha256=hashlib.sha256(key.encode()).hexdigest(),
        width=8,
        height=8,
        format="png",
        byte_size=10,
        vectors={"clip": _vector(key)},
    )


def _write(url: str, collection_id: int, writer: int) -> int:
    """Adds, re-embeds and deletes images of one collection; returns its transactions."""
    catalog = Catalog.open(CatalogSettings(database_url=url))
    transactions = 0
    try:
        mine: list[int] = []
        for round_ in range(ROUNDS):
            added = catalog.add_images(
                collection_id, [_image(f"{writer}-{round_}-{i}") for i in range(3)]
            )
            mine.extend(outcome.id for outcome in added)
            transactions += 1
            if round_ % 5 == 4:
                target = mine[round_ % len(mine)]
                catalog.put_embeddings(
                    collection_id, "clip", [target], _vector(f"again-{target}")[None, :]
                )
                transactions += 1
            if round_ % 4 == 3:
                catalog.delete_images(collection_id, [mine.pop(0)])
                transactions += 1
    finally:
        catalog.close()
    return transactions


class Follower:
    """Replays the feed as an index would: removals, then additions, window after window."""

    def __init__(self, catalog: Catalog, collection_id: int) -> None:
        self.catalog = catalog
        self.collection_id = collection_id
        self.applied = 0
        self.vectors: dict[int, bytes] = {}
        self.windows = 0

    def catch_up(self) -> None:
        upto = self.catalog.collection_seq(self.collection_id)
        if upto == self.applied:
            return
        change = self.catalog.changes(
            self.collection_id, "clip", after_seq=self.applied, upto_seq=upto
        )
        for image_id in change.removed_ids.tolist():
            self.vectors.pop(int(image_id), None)
        for image_id, row in zip(change.added_ids.tolist(), change.added_vectors, strict=True):
            self.vectors[int(image_id)] = row.tobytes()
        self.applied = upto
        self.windows += 1


def test_a_follower_never_skips_a_commit_of_writers_in_other_processes(
    catalog: Catalog, database_url: str
) -> None:
    if catalog.engine.dialect.name == "postgresql":
        with catalog.engine.begin() as connection:
            connection.execute(text(SLOW_COMMIT))
    collection = catalog.create_collection("photos", ["clip"])
    follower = Follower(catalog, collection.id)
    writing = threading.Event()
    writing.set()
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            while writing.is_set():
                follower.catch_up()
        except BaseException as error:  # reported below
            errors.append(error)

    thread = threading.Thread(target=follow)
    thread.start()
    spawn = multiprocessing.get_context("spawn")  # fresh engines: nothing inherited mid-use
    try:
        with ProcessPoolExecutor(max_workers=WRITERS, mp_context=spawn) as pool:
            futures = [
                pool.submit(_write, database_url, collection.id, writer)
                for writer in range(WRITERS)
            ]
            transactions = sum(future.result() for future in futures)
    finally:
        writing.clear()
        thread.join()
    assert not errors, errors
    follower.catch_up()

    # Every number was handed out once, none was lost: adds, re-embeds and deletes all counted.
    adds = WRITERS * ROUNDS * 3
    reembeds, deletes = WRITERS * (ROUNDS // 5), WRITERS * (ROUNDS // 4)
    assert transactions == WRITERS * ROUNDS + reembeds + deletes
    assert follower.applied == adds + 2 * reembeds + deletes
    # The follower, having replayed window after window while writers committed, holds exactly
    # the catalog's vectors: a skipped add would be missing, a skipped tombstone still there.
    survivors = [record.id for record in catalog.list_images(collection.id, limit=adds)]
    assert len(survivors) == adds - deletes
    ids, vectors = catalog.get_vectors(collection.id, "clip", survivors)
    truth = {int(i): row.tobytes() for i, row in zip(ids.tolist(), vectors, strict=True)}
    assert follower.vectors == truth
    assert follower.windows > 1  # it really followed along, not only at the end
