"""Two `vizdex serve` replicas on one PostgreSQL catalog and one data directory, on loopback.

Upload on one, find it on the other (also given the upload's sequence number as ``min_seq``; a
replica held back from the change feed answers such a search 503 ``not_caught_up``, in bounded
time); delete on the other, gone on the first; a background upload accepted by a replica that is
then killed with SIGKILL is finished by the survivor through the work queue; each replica keeps
its index files in its own folder, and a restarted replica catches up from its snapshot and the
change feed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

from tests.support.api_helpers import photo_b64
from vizdex.search import Catalog, CatalogSettings, NewImage
from vizdex.search.index_slot import FILE_SUFFIX

REPO = Path(__file__).parents[2]
SYNC_IMAGES = 2  # uploads above this many images become a (queued) job
LEASE_S = 3


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _replica(
    name: str, env: dict[str, str], model: Path, logs: Path
) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client]]:
    port = _free_port()
    env = {**env, "VIZDEX_REPLICA_ID": name}
    command = [
        sys.executable, "-m", "vizdex", "serve", "--port", str(port), "--model", str(model),
        "--device", "cpu",
    ]  # fmt: skip
    log = (logs / f"serve-{port}.log").open("wb")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        deadline = time.monotonic() + 240
        while True:
            if process.poll() is not None:
                pytest.fail(f"vizdex serve exited: {(logs / f'serve-{port}.log').read_text()}")
            try:
                if client.get("/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the replica never became ready"
            time.sleep(0.2)
        yield process, client
    finally:
        client.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        log.close()


def _search_answer(client: httpx.Client, image: str, **extra: Any) -> httpx.Response:
    return client.post("/v1/collections/photos/search", json={"image": image, "k": 5, **extra})


def _search(client: httpx.Client, image: str, **extra: Any) -> list[dict[str, Any]]:
    answer = _search_answer(client, image, **extra)
    assert answer.status_code == 200, answer.text
    hits: list[dict[str, Any]] = answer.json()["hits"]
    return hits


def _upload(client: httpx.Client, seeds: range) -> httpx.Response:
    items = [{"data": photo_b64(seed), "name": f"{seed}.jpg"} for seed in seeds]
    return client.post("/v1/collections/photos/images", json={"images": items})


# Backends waiting for the change feed's tombstone table, which ``_feed_held`` locks.
FEED_WAITERS = (
    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
    "WHERE c.relname = 'embedding_tombstones' AND NOT l.granted"
)


@contextmanager
def _feed_held(url: str) -> Iterator[Connection]:
    """Locks the tombstone table in an open transaction: new changes can still be committed
    (an added image leaves no tombstone), but no index can read the change feed to apply them
    until the block ends."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text("LOCK TABLE embedding_tombstones IN ACCESS EXCLUSIVE MODE"))
            try:
                yield connection
            finally:
                connection.rollback()
    finally:
        engine.dispose()


def _write_elsewhere(url: str, like: int, model: str) -> tuple[int, int]:
    """Adds an image (with ``like``'s vector) straight to the catalog; its id and seq."""
    catalog = Catalog.open(CatalogSettings(database_url=url))
    try:
        collection = catalog.get_collection("photos")
        _, vectors = catalog.get_vectors(collection.id, model, [like])
        image = NewImage(
            sha256="ab" * 32,
            width=8,
            height=8,
            format="jpeg",
            byte_size=1,
            vectors={model: vectors[0]},
        )
        (added,) = catalog.add_images(collection.id, [image])
        return added.id, catalog.collection_seq(collection.id)
    finally:
        catalog.close()


def _until(condition: Callable[[], bool], what: str) -> None:
    """Waits for a state that, once reached, stays until the test ends it."""
    deadline = time.monotonic() + 120
    while not condition():
        assert time.monotonic() < deadline, f"waited in vain for {what}"
        time.sleep(0.05)


def test_two_replicas_share_one_catalog_and_survive_each_other(
    tmp_path: Path, postgres_url: str, tiny_clip_dir: Path
) -> None:
    data = tmp_path / "data"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "VIZDEX_DATABASE_URL": postgres_url,
        "VIZDEX_DATA_DIR": str(data),
        "VIZDEX_UPLOAD_SYNC_IMAGES": str(SYNC_IMAGES),
        "VIZDEX_WORKER_LEASE_S": str(LEASE_S),
        # No lock timeout: while the test holds the change feed, the followers wait for it
        # rather than give up after 30 s and then take the search's turn.
        "VIZDEX_DB_BUSY_TIMEOUT_MS": "0",
    }
    with _replica("a", env, tiny_clip_dir, tmp_path) as (_, first):
        created = first.post(
            "/v1/collections", json={"name": "photos", "models": [str(tiny_clip_dir)]}
        )
        assert created.status_code == 201, created.text
        model = created.json()["models"][0]
        with _replica("b", env, tiny_clip_dir, tmp_path) as (second_process, second):
            # Written on one replica, found on the other: the write's sequence number, passed as
            # `min_seq`, makes the other answer only once it holds the write (read-your-writes).
            added = _upload(first, range(1, 3))
            assert added.status_code == 201, added.text
            ids = [result["id"] for result in added.json()["results"]]
            seq = added.json()["seq"]
            assert added.headers["Vizdex-Seq"] == str(seq)
            hits = _search(second, photo_b64(1), min_seq=seq)
            assert [hit["id"] for hit in hits][:1] == ids[:1]
            # A number no write has answered yet is refused, not waited for.
            ahead = _search_answer(second, photo_b64(1), min_seq=seq + 1_000_000)
            assert ahead.status_code == 422, ahead.text
            assert ahead.json()["code"] == "invalid_query"

            # A change committed elsewhere (as a worker's) while the change feed is held up:
            # both replicas' followers wait inside their index's lock, as behind a long replay,
            # and a search given its seq answers 503 in bounded time, then 200 once it passes.
            with _feed_held(postgres_url) as held:
                late_id, late_seq = _write_elsewhere(postgres_url, ids[1], model)
                _until(lambda: held.scalar(text(FEED_WAITERS)) == 2, "both followers to wait")
                behind = _search_answer(second, photo_b64(1), min_seq=late_seq)
                assert behind.status_code == 503, behind.text
                assert behind.json()["code"] == "not_caught_up"
                assert behind.headers["Retry-After"] == "1"
                assert second.get("/health/ready").json()["lag"] > 0
            _until(lambda: second.get("/health/ready").json()["lag"] == 0, "b to catch up")
            assert late_id in [hit["id"] for hit in _search(second, photo_b64(1), min_seq=late_seq)]
            assert second.delete(f"/v1/collections/photos/images/{late_id}").status_code == 204
            # Deleted on the other, gone on the first.
            assert second.delete(f"/v1/collections/photos/images/{ids[0]}").status_code == 204
            assert ids[0] not in [hit["id"] for hit in _search(first, photo_b64(1))]

            # A background upload accepted by the second replica, which then dies at once:
            # the job is in the catalog's queue and the first replica's worker finishes it.
            accepted = _upload(second, range(10, 16))
            assert accepted.status_code == 202, accepted.text
            job_url = accepted.headers["location"]
            second_process.send_signal(signal.SIGKILL)
            second_process.wait(timeout=30)
            deadline = time.monotonic() + 240
            while (job := first.get(job_url).json())["state"] not in ("done", "failed"):
                assert time.monotonic() < deadline, f"the job never finished: {job}"
                time.sleep(0.2)
            assert job["state"] == "done" and job["done"] + job["skipped"] == 6, job
            found = _search(first, photo_b64(12))
            assert found[0]["original_name"] == "12.jpg"

    # Each replica writes index files in its own folder only ("b" was killed before it saved).
    indexes = data / "indexes"
    written = [path.relative_to(indexes) for path in indexes.rglob(f"*{FILE_SUFFIX}")]
    assert written and all(path.parts[0] in ("replica-a", "replica-b") for path in written)
    assert any(path.parts[0] == "replica-a" for path in written)

    # Replica "a" restarted: its snapshot, then the change feed since, bring it up to date.
    with _replica("a", env, tiny_clip_dir, tmp_path) as (_, again):
        listed = again.get("/v1/collections/photos").json()
        assert listed["image_count"] == 1 + 6, listed
        assert _search(again, photo_b64(15))[0]["original_name"] == "15.jpg"
        info = again.get("/v1/collections/photos").json()
        assert model in str(info)
