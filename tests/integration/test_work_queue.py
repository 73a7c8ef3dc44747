"""The catalog's work queue on SQLite and PostgreSQL: claims, leases, take-overs, cancel, counts.

And one job run through it in this process (``QueueWorker`` + ``Indexer.run_chunk``), on both.
The many-process case (workers killed with SIGKILL) is ``tests/e2e/test_workers.py``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.support.ingest_helpers import Harness, all_images, photo_folder
from tests.support.ingest_helpers import harness as harness  # the fixture
from tests.support.postgres import DATABASES, database_url_for
from vizdex.indexer import QueueWorker, WorkerOptions
from vizdex.indexer.queue import cancel_job
from vizdex.indexer.sources import IngestRequest, Upload
from vizdex.search import Catalog, JobFailure, JobState


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, data_dir: Path) -> str:
    return database_url_for(request, data_dir)


def _job(catalog: Catalog, chunks: int) -> tuple[int, int]:
    collection = catalog.create_collection("photos", ["clip"])
    job = catalog.enqueue_job(
        collection.id,
        kind="ingest",
        source="/photos",
        total=10 * chunks,
        chunks=[{"paths": [f"/photos/{n}.jpg"]} for n in range(chunks)],
    )
    assert job.state is JobState.PENDING and job.total == 10 * chunks
    return collection.id, job.id


def _claim_after_expiry(catalog: Catalog, owner: str) -> int:
    """Claims as ``owner`` once some lease has run out (polls; pytest-timeout bounds it)."""
    while (claimed := catalog.claim_work(owner, lease_s=60)) is None:
        time.sleep(0.05)
    assert claimed.resumed
    return claimed.id


def test_chunks_are_claimed_once_each_and_a_dead_owners_chunk_is_taken_over(
    catalog: Catalog,
) -> None:
    _, job_id = _job(catalog, 3)
    first = catalog.claim_work("a", lease_s=0.3)
    second = catalog.claim_work("b", lease_s=60)
    third = catalog.claim_work("c", lease_s=60)
    assert first and second and third
    assert [first.position, second.position, third.position] == [0, 1, 2]
    assert catalog.claim_work("d", lease_s=60) is None  # every chunk is held
    assert catalog.get_job(job_id).state is JobState.RUNNING

    # "a" counts some work, then dies: its lease runs out and "d" takes the chunk over.
    assert catalog.record_item_progress(
        first.id, "a", done=4, skipped=1, failures=[JobFailure("x", "corrupt", "bad")]
    )
    assert (catalog.get_job(job_id).done, catalog.get_job(job_id).failed) == (4, 1)
    assert _claim_after_expiry(catalog, "d") == first.id
    # The dead owner's share left the job's counters and its failures: "d" counts the whole
    # chunk again, and meets the same bad file again.
    taken = catalog.get_job(job_id)
    assert (taken.done, taken.skipped, taken.failed, taken.failures) == (0, 0, 0, ())
    assert catalog.record_item_progress(first.id, "d", failures=[JobFailure("x", "corrupt", "bad")])
    again = catalog.get_job(job_id)
    assert (again.failed, again.failures) == (1, (JobFailure("x", "corrupt", "bad"),))
    # "a" comes back from its stall: its heartbeat, counts and end are all refused.
    assert not catalog.renew_lease(first.id, "a", lease_s=60)
    assert not catalog.record_item_progress(first.id, "a", done=1)
    assert catalog.finish_work(first.id, "a") is None
    assert catalog.renew_lease(first.id, "d", lease_s=60)

    assert catalog.record_item_progress(first.id, "d", done=4)
    for item, owner in ((first.id, "d"), (second.id, "b")):
        ended = catalog.finish_work(item, owner)
        assert ended is not None and ended.state is JobState.RUNNING  # a chunk is left
    last = catalog.finish_work(third.id, "c", failed=True, error="disk on fire")
    assert last is not None and last.state is JobState.FAILED and last.error == "disk on fire"
    assert last.finished_at is not None and (last.done, last.failed) == (4, 1)


def test_a_cancelled_job_stops_its_running_chunks_and_drops_its_waiting_ones(
    catalog: Catalog,
) -> None:
    _, job_id = _job(catalog, 2)
    running = catalog.claim_work("a", lease_s=60)
    assert running is not None
    cancelled, dropped = catalog.cancel_job(job_id)
    assert cancelled.state is JobState.CANCELLED and cancelled.finished_at is not None
    assert dropped == [{"paths": ["/photos/1.jpg"]}]  # the waiting chunk's payload
    assert not catalog.renew_lease(running.id, "a", lease_s=60)  # the worker stops at its beat
    assert catalog.claim_work("b", lease_s=60) is None  # the waiting chunk is gone
    assert catalog.finish_work(running.id, "a") is not None
    assert catalog.get_job(job_id).state is JobState.CANCELLED


def test_a_cancelled_jobs_spooled_uploads_are_removed(harness: Harness, tmp_path: Path) -> None:
    files = photo_folder(tmp_path / "photos", 3)
    indexer, catalog = harness.indexer, harness.catalog
    uploads = tuple(Upload(path.read_bytes(), name=path.name) for path in files)
    job = indexer.enqueue("photos", IngestRequest(uploads=uploads), chunk_size=1)
    spool = indexer.store.resolve("queue")

    def spooled() -> list[str]:
        return sorted(path.name for path in spool.rglob("*") if path.is_file())

    assert spooled() == ["0", "1", "2"]
    running = catalog.claim_work("a", lease_s=60)
    assert running is not None and running.position == 0
    assert cancel_job(catalog, indexer.store, job.id).state is JobState.CANCELLED
    assert spooled() == ["0"]  # the waiting chunks' uploads are gone, the running one's stays
    # Its worker hands it back as it stops (or dies, and its lease runs out): the next worker to
    # claim it finds the job cancelled, runs nothing and removes what is left.
    catalog.release_work(running.id, "a")
    worker = QueueWorker(catalog, indexer.run_chunk, indexer.store, WorkerOptions(poll_s=0.05))
    assert worker.run(threading.Event(), until_idle=True) == 0
    assert spooled() == [] and not any(spool.iterdir())
    assert catalog.claim_work("b", lease_s=60) is None
    assert catalog.get_job(job.id).state is JobState.CANCELLED


def test_released_chunks_are_claimed_again_at_once(catalog: Catalog) -> None:
    _job(catalog, 1)
    claimed = catalog.claim_work("a", lease_s=60)
    assert claimed is not None
    catalog.release_work(claimed.id, "a")
    again = catalog.claim_work("b", lease_s=60)
    assert again is not None and again.id == claimed.id and again.attempts == 2


def _work_until_idle(harness: Harness, workers: int) -> int:
    """Runs ``workers`` queue workers side by side until no chunk is left; returns chunks run."""
    indexer = harness.indexer
    pool = [
        QueueWorker(harness.catalog, indexer.run_chunk, indexer.store, WorkerOptions(poll_s=0.05))
        for _ in range(workers)
    ]
    threads = [
        threading.Thread(target=worker.run, args=(threading.Event(),), kwargs={"until_idle": True})
        for worker in pool
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(worker.chunks_run for worker in pool)


def test_queued_folders_and_uploads_run_through_workers_into_the_catalog(
    harness: Harness, tmp_path: Path
) -> None:
    files = photo_folder(tmp_path / "photos", 12)
    indexer = harness.indexer
    folder = IngestRequest(paths=(str(tmp_path / "photos"),))
    folder_job = indexer.enqueue("photos", folder, chunk_size=5)
    assert _work_until_idle(harness, 2) == 3
    ran = harness.catalog.get_job(folder_job.id)
    assert (ran.state, ran.total, ran.done, ran.failed) == (JobState.DONE, 12, 12, 0)

    uploads = tuple(Upload(path.read_bytes(), name=path.name) for path in files[:3])
    upload_job = indexer.enqueue("photos", IngestRequest(uploads=uploads), chunk_size=2)
    spool = indexer.store.resolve("queue")
    assert len(list(spool.rglob("*"))) == 3 + 1  # the uploads wait on disk, for any worker
    assert _work_until_idle(harness, 2) == 2
    uploaded = harness.catalog.get_job(upload_job.id)
    # The same photos are already in by path: the uploads are duplicates, counted as skipped.
    assert (uploaded.state, uploaded.total, uploaded.skipped) == (JobState.DONE, 3, 3)
    assert len(all_images(harness.catalog, harness.collection.id)) == 12
    assert not any(spool.iterdir())  # spooled uploads are gone once their chunks ended
