"""A back-fill job's life as others see it: ``running`` while it runs, and a collection deleted
under it ends it quietly (an adversarial run found it ``pending`` throughout, and a deleted
collection killing its thread with an unhandled JobNotFoundError)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support.ingest_helpers import Harness, photo_folder
from tests.support.ingest_helpers import harness as harness  # the fixture
from vizdex.indexer import IngestRequest
from vizdex.search import JobNotFoundError, JobState


def test_a_running_backfill_says_running_and_ends_quietly_when_its_collection_goes(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unhandled: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", unhandled.append)
    clip, dino = harness.collection.models
    photo_folder(tmp_path / "photos", 6)
    record = harness.catalog.create_collection("doomed", [clip])
    harness.indexer.ingest(record.name, IngestRequest(paths=(str(tmp_path / "photos"),)))
    harness.catalog.add_model(record.id, dino)

    first_batch = threading.Event()
    go_on = threading.Event()

    def progress(done: int, total: int) -> None:
        first_batch.set()
        go_on.wait(60)

    job = harness.indexer.backfill("doomed", dino, progress=progress)
    assert first_batch.wait(60)
    assert harness.catalog.get_job(job.id).state is JobState.RUNNING  # was "pending"
    harness.catalog.delete_collection("doomed")
    go_on.set()
    thread = harness.indexer._backfills[(record.id, dino)]
    thread.join(60)
    assert not thread.is_alive() and unhandled == []
    with pytest.raises(JobNotFoundError):
        harness.catalog.get_job(job.id)
