"""Four `vizdex worker` processes ingest 2,000 files of one collection from one PostgreSQL
catalog; one of them is killed with SIGKILL mid-chunk.

The killed worker's lease runs out and one of the three others takes its chunk over and resumes
it: every file ends up indexed exactly once, the job's counts are exact, and every image finds
itself first by reverse lookup. Real subprocesses running the real command line; the photos are
tiny so that 2,000 of them stay quick on a small machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from sqlalchemy import Connection, create_engine, select, text
from sqlalchemy.pool import NullPool

from tests.support.ingest_helpers import all_images, photo_folder, sha256_of
from vizdex.cli.main import main
from vizdex.search import Catalog, CatalogSettings, IndexSettings, IndexStore, JobState
from vizdex.search.models import WorkItem

REPO = Path(__file__).parents[2]
PHOTOS = 2000
PHOTO_SIZE = (48, 36)  # decoding and encoding stay cheap; the queue and the catalog see 2,000
CHUNK = 50
BATCH = 16  # images per encoder batch, and so per catalog transaction
SURVIVORS = 3  # with the doomed worker, four
LEASE_S = 3


def _env(tmp_path: Path, url: str, data: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "VIZDEX_DATABASE_URL": url,
        "VIZDEX_DATA_DIR": str(data),
        # No lock timeout: the writers the test holds wait for as long as it takes the others
        # to start on a slow machine (30 s by default, and then the held chunk would fail).
        "VIZDEX_DB_BUSY_TIMEOUT_MS": "0",
    }


def _worker(name: str, model: Path, env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    """A worker whose output goes to ``logs/<name>.log`` (a pipe nobody reads could fill up
    and stall it)."""
    command = [
        sys.executable, "-m", "vizdex", "worker", "--name", name, "--model", str(model),
        "--device", "cpu", "--batch-size", str(BATCH), "--workers", "1",
        "--lease", str(LEASE_S), "--poll", "0.2",
    ]  # fmt: skip
    with (logs / f"{name}.log").open("wb") as log:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _log(process: subprocess.Popen[bytes], logs: Path) -> str:
    command = cast(list[str], process.args)
    name = command[command.index("--name") + 1]
    return (logs / f"{name}.log").read_text(errors="replace")[-3000:]


def _items(catalog: Catalog) -> list[WorkItem]:
    with catalog._read() as session:
        return list(session.scalars(select(WorkItem).order_by(WorkItem.id)))


# A test-only trigger: once a batch's worth of images is written, the next image insert waits for
# an advisory lock the test holds. The worker (alone at that point) then stays part-way through its
# chunk for as long as the test wants, whatever the machine's speed: polling for that moment lost
# the race on a fast idle machine, where a chunk took less than one progress interval. Workers
# started later wait behind the collection's write lock its open transaction holds.
HOLD_LOCK = 424242
HOLD_AFTER_FIRST_BATCH = f"""
CREATE FUNCTION hold_second_batch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT count(*) FROM images) >= {BATCH} THEN
        PERFORM pg_advisory_xact_lock({HOLD_LOCK});
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER hold_second_batch BEFORE INSERT ON images FOR EACH ROW
EXECUTE FUNCTION hold_second_batch();
"""
WAITING_FOR_HOLD = (
    f"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = {HOLD_LOCK} "
    "AND NOT granted"
)


def _hold_doomed_worker(url: str) -> Connection:
    """Installs the trigger and takes its lock; unlocking lets the writers go on."""
    connection = create_engine(url, poolclass=NullPool).connect()
    connection.execute(text(HOLD_AFTER_FIRST_BATCH))
    connection.commit()
    connection.execute(text(f"SELECT pg_advisory_lock({HOLD_LOCK})"))
    connection.commit()
    return connection


def _wait(
    condition: object, what: str, processes: list[subprocess.Popen[bytes]], logs: Path
) -> None:
    deadline = time.monotonic() + 300
    while not condition():  # type: ignore[operator]
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"a worker exited while waiting for {what}: {_log(process, logs)}")
        assert time.monotonic() < deadline, f"no progress while waiting for {what}"
        time.sleep(0.02)


def test_a_worker_killed_mid_chunk_is_replaced_and_every_file_is_indexed_once(
    tmp_path: Path,
    postgres_url: str,
    tiny_clip_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = photo_folder(tmp_path / "photos", PHOTOS, per_folder=200, size=PHOTO_SIZE)
    data = tmp_path / "data"
    env = _env(tmp_path, postgres_url, data)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    enqueue = ["ingest", str(tmp_path / "photos"), "-c", "photos", "--model", str(tiny_clip_dir)]
    assert main([*enqueue, "--enqueue", "--chunk-size", str(CHUNK)]) == 0
    catalog = Catalog.open(CatalogSettings(database_url=postgres_url))
    workers: list[subprocess.Popen[bytes]] = []
    hold = _hold_doomed_worker(postgres_url)
    try:
        collection = catalog.get_collection("photos")
        (job,) = catalog.list_jobs(collection_id=collection.id)
        assert (job.state, job.total) == (JobState.PENDING, PHOTOS)

        # The doomed worker starts alone, so it surely holds a chunk part-way through when it is
        # killed; started together, the others could take every chunk first (seen under load).
        doomed = _worker("doomed", tiny_clip_dir, env, tmp_path)
        workers.append(doomed)

        def doomed_is_mid_chunk() -> bool:
            holding = any(i.owner == "doomed" and i.state == "running" for i in _items(catalog))
            return holding and hold.scalar(text(WAITING_FOR_HOLD)) == 1

        _wait(
            doomed_is_mid_chunk,
            "the doomed worker to be part-way through a chunk",
            workers,
            tmp_path,
        )
        # What it committed of its chunk (one batch or a few smaller ones, as decoding kept up;
        # what its blocked transaction holds is not visible): nobody else has written yet.
        committed = len(all_images(catalog, collection.id))
        assert 0 < committed <= BATCH
        # Its heartbeat keeps renewing the lease while it waits: the chunk is still its own.
        (held,) = [i for i in _items(catalog) if i.owner == "doomed" and i.state == "running"]

        # The three others each claim a chunk and wait at their first write (the doomed
        # worker's open transaction holds the collection's write lock): all four workers are
        # then part-way through a chunk of the same job, and stay so until it is released.
        survivors = [
            _worker(f"survivor-{n}", tiny_clip_dir, env, tmp_path) for n in range(SURVIVORS)
        ]
        workers.extend(survivors)
        everyone = {"doomed", *(f"survivor-{n}" for n in range(SURVIVORS))}

        def all_four_hold_a_chunk() -> bool:
            return {i.owner for i in _items(catalog) if i.state == "running"} == everyone

        _wait(all_four_hold_a_chunk, "every worker to hold a chunk", workers, tmp_path)
        doomed.send_signal(signal.SIGKILL)
        doomed.communicate(timeout=30)
        # Its database session, blocked in the trigger, now goes on, finds its client gone and
        # rolls back: its chunk stays as it last committed it. The others go on writing.
        hold.execute(text(f"SELECT pg_advisory_unlock({HOLD_LOCK})"))
        hold.close()

        def job_finished() -> bool:
            return catalog.get_job(job.id).state.finished

        _wait(job_finished, "the survivors to finish the job", survivors, tmp_path)
        for survivor in survivors:
            survivor.send_signal(signal.SIGTERM)
        for survivor in survivors:
            survivor.communicate(timeout=60)
            assert survivor.returncode == 0, _log(survivor, tmp_path)

        finished = catalog.get_job(job.id)
        assert finished.state is JobState.DONE, finished.error
        # Exact counts: what the doomed worker committed in its chunk is counted once, as
        # skipped by the survivor that resumed the chunk (its lease ran out: a new attempt).
        assert (finished.done, finished.skipped, finished.failed) == (
            PHOTOS - committed,
            committed,
            0,
        )
        assert not finished.failures
        taken_over = next(i for i in _items(catalog) if i.id == held.id)
        assert (taken_over.state, taken_over.attempts) == ("done", 2)
        assert (taken_over.owner or "").startswith("survivor-")
        items = _items(catalog)
        assert len(items) == PHOTOS // CHUNK and all(item.state == "done" for item in items)
        assert {item.owner for item in items} == {f"survivor-{n}" for n in range(SURVIVORS)}

        # Every file exactly once, with its own content.
        images = all_images(catalog, collection.id)
        assert sorted(image.source_uri or "" for image in images) == sorted(map(str, files))
        assert {image.sha256 for image in images} == {sha256_of(path) for path in files}
        ids = sorted(image.id for image in images)
        model = collection.models[0]
        assert catalog.embedding_summary(collection.id, model)[1] == PHOTOS

        # Reverse lookup: each image's own vector finds that image first.
        indexes = IndexStore(catalog, IndexSettings(directory=tmp_path / "indexes", device="cpu"))
        try:
            stored_ids, vectors = catalog.get_vectors(collection.id, model, ids)
            found = indexes.search(collection, model, vectors, 1)
            assert np.array_equal(found.ids[:, 0], stored_ids)
        finally:
            indexes.close(snapshot=False)
    finally:
        for process in workers:
            if process.poll() is None:  # a failed assertion must not leave workers running
                process.kill()
                process.communicate()
        hold.close()
        catalog.close()
