"""`vizdex collections add-model` killed with SIGKILL mid back-fill, then run again: every image
gets the new model's vector exactly once, equal to what an ingest with that model computes.

Real subprocesses running the real command line, tiny random CLIP and DINOv3 checkpoints.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tests.support.ingest_helpers import (
    assert_index_matches_catalog,
    offline_env,
    photo_folder,
)
from vizdex.cli.main import main
from vizdex.search import Catalog, IndexStore, JobState, SearchSettings

REPO = Path(__file__).parents[2]
PHOTOS = 24


def _vectors_of(database: Path, model: str) -> int:
    """The model's vectors committed so far, read without disturbing the writer (WAL)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
        row = connection.execute("SELECT count(*) FROM embeddings WHERE model = ?", (model,))
        return int(row.fetchone()[0])


def test_add_model_killed_mid_backfill_resumes_and_embeds_every_image_once(
    tmp_path: Path, tiny_clip_dir: Path, tiny_dino_dir: Path
) -> None:
    photos = tmp_path / "photos"
    photo_folder(photos, PHOTOS, per_folder=8)
    data = tmp_path / "data"
    clip, dino = str(tiny_clip_dir), str(tiny_dino_dir)
    # float32 in every process: the test process defaults to it, a bare subprocess may not.
    common = ["--device", "cpu", "--dtype", "float32", "--data-dir", str(data)]
    assert (
        main(["ingest", str(photos), "--collection", "c", "--model", clip, "--quiet", *common]) == 0
    )
    # The reference: the same folder ingested with the new model (JPEGs decode at its scale).
    assert (
        main(["ingest", str(photos), "--collection", "ref", "--model", dino, "--quiet", *common])
        == 0
    )
    database = data / "catalog.db"
    # Slow on purpose (2 images a batch, a tenth of the device): the kill lands mid-way.
    command = [
        sys.executable,
        "-m",
        "vizdex",
        "collections",
        "add-model",
        "c",
        "--model",
        dino,
        "--batch-size",
        "2",
        "--share",
        "0.1",
        "--json",
        *common,
    ]
    env = offline_env(tmp_path)
    before_kill = _vectors_of(database, dino)  # the reference collection's
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while _vectors_of(database, dino) < before_kill + 4 and process.poll() is None:
        assert time.monotonic() < deadline, "the back-fill made no progress"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    done_before = _vectors_of(database, dino) - before_kill
    assert 4 <= done_before < PHOTOS, done_before

    final = subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=300)
    assert final.returncode == 0, final.stderr.decode()[-2000:]
    shown = json.loads(final.stdout)
    assert shown["job"]["state"] == "done" and shown["job"]["done"] == PHOTOS - done_before
    states = {row["model"]: (row["state"], row["coverage"]) for row in shown["models"]}
    assert states == {clip: ("ready", 1.0), dino: ("ready", 1.0)}

    settings = SearchSettings.for_data_dir(data)
    catalog = Catalog.open(settings.catalog)
    indexes = IndexStore(catalog, settings.index)
    try:
        record = catalog.get_collection("c")
        assert record.models == (clip, dino) and record.ready_models == (clip, dino)
        assert catalog.model_coverage(record.id) == {clip: PHOTOS, dino: PHOTOS}
        # Exactly once: no vector was replaced (a replaced one leaves a tombstone).
        assert catalog.row_counts()["embedding_tombstones"] == 0
        assert_index_matches_catalog(catalog, indexes, record)
        # The killed run's job was reaped as interrupted; the rerun's is done.
        jobs = sorted(catalog.list_jobs(collection_id=record.id), key=lambda j: j.id)
        backfills = [job for job in jobs if job.kind == "backfill"]
        assert [job.state for job in backfills] == [JobState.FAILED, JobState.DONE]
        # Equal to an ingest with the model: the same files, by content.
        reference = catalog.get_collection("ref")
        ref_ids = catalog.find_by_sha256(reference.id, catalog.iter_sha256(record.id))
        mine = catalog.find_by_sha256(record.id, list(ref_ids))
        shas = sorted(ref_ids)
        _, filled = catalog.get_vectors(record.id, dino, [mine[s] for s in shas])
        _, ingested = catalog.get_vectors(reference.id, dino, [ref_ids[s] for s in shas])
        cosine = np.sum(filled * ingested, axis=1) / (
            np.linalg.norm(filled, axis=1) * np.linalg.norm(ingested, axis=1)
        )
        assert len(cosine) == PHOTOS and cosine.min() >= 0.9999, cosine.min()
    finally:
        indexes.close()
        catalog.close()
