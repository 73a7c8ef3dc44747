"""Two `vizdex worker` processes on one PostgreSQL catalog; one is killed with SIGKILL mid-chunk.

The killed worker's lease runs out and the survivor takes its chunk over and resumes it: every
file ends up indexed exactly once, the job's counts are exact, and every image finds itself first
by reverse lookup. Real subprocesses running the real command line.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from tests.support.ingest_helpers import all_images, offline_env, photo_folder, sha256_of
from vizdex.cli.main import main
from vizdex.search import Catalog, CatalogSettings, IndexSettings, IndexStore, JobState
from vizdex.search.models import WorkItem

REPO = Path(__file__).parents[2]
PHOTOS = 60
CHUNK = 10
LEASE_S = 3


def _env(tmp_path: Path, url: str, data: Path) -> dict[str, str]:
    return offline_env(tmp_path, VIZDEX_DATABASE_URL=url, VIZDEX_DATA_DIR=str(data))


def _worker(name: str, model: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "vizdex", "worker", "--name", name, "--model", str(model),
        "--device", "cpu", "--batch-size", "2", "--workers", "1",
        "--lease", str(LEASE_S), "--poll", "0.2",
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _items(catalog: Catalog) -> list[WorkItem]:
    with catalog._read() as session:
        return list(session.scalars(select(WorkItem).order_by(WorkItem.id)))


def _wait(condition: object, what: str, processes: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 300
    while not condition():  # type: ignore[operator]
        for process in processes:
            if process.poll() is not None:
                _, stderr = process.communicate()
                pytest.fail(f"a worker exited while waiting for {what}: {stderr.decode()[-3000:]}")
        assert time.monotonic() < deadline, f"no progress while waiting for {what}"
        time.sleep(0.02)


def test_a_worker_killed_mid_chunk_is_replaced_and_every_file_is_indexed_once(
    tmp_path: Path,
    postgres_url: str,
    tiny_clip_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = photo_folder(tmp_path / "photos", PHOTOS, per_folder=12)
    data = tmp_path / "data"
    env = _env(tmp_path, postgres_url, data)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    enqueue = ["ingest", str(tmp_path / "photos"), "-c", "photos", "--model", str(tiny_clip_dir)]
    assert main([*enqueue, "--enqueue", "--chunk-size", str(CHUNK)]) == 0
    catalog = Catalog.open(CatalogSettings(database_url=postgres_url))
    workers: list[subprocess.Popen[bytes]] = []
    try:
        collection = catalog.get_collection("photos")
        (job,) = catalog.list_jobs(collection_id=collection.id)
        assert (job.state, job.total) == (JobState.PENDING, PHOTOS)

        # The doomed worker starts alone, so it surely holds a chunk part-way through when it is
        # killed; started together, the survivor could take every chunk first (seen under load).
        doomed = _worker("doomed", tiny_clip_dir, env)
        workers.append(doomed)

        def doomed_is_mid_chunk() -> bool:
            return any(
                item.owner == "doomed" and item.state == "running" and item.done > 0
                for item in _items(catalog)
            )

        _wait(doomed_is_mid_chunk, "the doomed worker to be part-way through a chunk", workers)
        survivor = _worker("survivor", tiny_clip_dir, env)
        workers.append(survivor)
        doomed.send_signal(signal.SIGKILL)
        doomed.communicate(timeout=30)
        # It died holding a chunk it had started on: nobody but the survivor can end it now.
        (held,) = [i for i in _items(catalog) if i.owner == "doomed" and i.state == "running"]

        def job_finished() -> bool:
            return catalog.get_job(job.id).state.finished

        _wait(job_finished, "the survivor to finish the job", [survivor])
        survivor.send_signal(signal.SIGTERM)
        _, stderr = survivor.communicate(timeout=60)
        assert survivor.returncode == 0, stderr.decode()[-3000:]

        finished = catalog.get_job(job.id)
        assert finished.state is JobState.DONE, finished.error
        # Exact counts: what the doomed worker committed in its last chunk is counted once,
        # as skipped by the survivor that resumed the chunk.
        assert (finished.done + finished.skipped, finished.failed) == (PHOTOS, 0)
        taken_over = next(i for i in _items(catalog) if i.id == held.id)
        assert (taken_over.owner, taken_over.state, taken_over.attempts) == (
            "survivor",
            "done",
            2,
        )
        assert all(item.state == "done" for item in _items(catalog))

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
        catalog.close()
