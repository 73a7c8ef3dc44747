"""`vizdex ingest` killed with SIGKILL at random points, then run again: every image exactly once.

Real subprocesses running the real command line; the kill points are drawn from a seeded RNG
(after a random number of committed images, plus a random delay so that kills also land inside
decoding, writes, thumbnail renames and index snapshots).
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.support.ingest_helpers import (
    all_images,
    assert_index_matches_catalog,
    offline_env,
    photo_folder,
    sha256_of,
)
from vizdex.encoders.base import Encoder
from vizdex.indexer import INTERRUPTED, Indexer, IndexerSettings, IngestRequest
from vizdex.search import Catalog, IndexStore, JobState, SearchSettings

REPO = Path(__file__).parents[2]
PHOTOS = 64
KILLS = 3


def _committed(database: Path) -> int:
    """Images committed so far, read without disturbing the writer (WAL: readers never block)."""
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
            return int(connection.execute("SELECT count(*) FROM images").fetchone()[0])
    except sqlite3.OperationalError:  # schema not created yet
        return 0


def _env(tmp_path: Path) -> dict[str, str]:
    # Snapshots all along, so kills land in them too.
    return offline_env(tmp_path, VIZDEX_INDEX_SNAPSHOT_EVERY="8")


def test_sigkill_at_random_points_then_rerun_gives_every_image_exactly_once(
    tmp_path: Path,
    tiny_clip_dir: Path,
    tiny_dino_dir: Path,
    clip_encoder: Encoder,
    dino_encoder: Encoder,
) -> None:
    rng = random.Random(20240607)
    photos = tmp_path / "photos"
    files = photo_folder(photos, PHOTOS, per_folder=16)
    shutil.copy(files[5], photos / "zz-duplicate.jpg")
    (photos / "zz-broken.jpg").write_bytes(files[0].read_bytes()[:2000])
    data = tmp_path / "data"
    database = data / "catalog.db"
    command = [
        sys.executable,
        "-m",
        "vizdex",
        "ingest",
        str(photos),
        "--collection",
        "photos",
        "--model",
        str(tiny_clip_dir),
        "--model",
        str(tiny_dino_dir),
        "--device",
        "cpu",
        "--batch-size",
        "4",
        "--workers",
        "2",
        "--data-dir",
        str(data),
        "--quiet",
        "--json",
    ]
    env = _env(tmp_path)

    killed_at: list[int] = []
    for _ in range(KILLS):
        before = _committed(database)
        target = before + rng.randint(1, 8)
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        while _committed(database) < target and process.poll() is None:
            assert time.monotonic() < deadline, "the ingestion made no progress"
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.03))
        process.send_signal(signal.SIGKILL)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
        killed_at.append(_committed(database))
    assert killed_at[-1] < PHOTOS, "every kill came too late to interrupt anything"

    final = subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=300)
    assert final.returncode == 0, final.stderr.decode()[-2000:]
    report = json.loads(final.stdout)
    assert report["state"] == "done"
    assert report["failed"] == 1 and report["failures"][0]["code"] == "corrupt"
    assert report["indexed"] + report["unchanged"] == PHOTOS
    assert report["indexed"] == PHOTOS - killed_at[-1]

    settings = SearchSettings.for_data_dir(data)
    catalog = Catalog.open(settings.catalog)
    indexes = IndexStore(catalog, settings.index)
    try:
        collection = catalog.get_collection("photos")
        images = all_images(catalog, collection.id)
        # Exactly once: one row per distinct photo, at its own path, with its own content.
        assert len(images) == PHOTOS
        assert sorted(i.source_uri or "" for i in images) == sorted(str(f) for f in files)
        assert {i.sha256 for i in images} == {sha256_of(f) for f in files}
        for image in images:
            assert image.sha256 == sha256_of(Path(image.source_uri or ""))
            thumbnail = data / (image.thumbnail_path or "missing")
            assert thumbnail.is_file() and thumbnail.stat().st_size > 0
        ids = assert_index_matches_catalog(catalog, indexes, collection)
        for model in collection.models:
            assert catalog.embedding_summary(collection.id, model)[1] == len(ids)
        jobs = sorted(catalog.list_jobs(collection_id=collection.id), key=lambda j: j.id)
        assert [job.state for job in jobs] == [JobState.FAILED] * KILLS + [JobState.DONE]
        assert all(job.error == INTERRUPTED for job in jobs[:KILLS])

        # And once more, in this process: nothing left to do.
        encoders = {encoder.name: encoder for encoder in (clip_encoder, dino_encoder)}
        assert sorted(encoders) == sorted(collection.models)
        indexer = Indexer(catalog, indexes, encoders, IndexerSettings(data_dir=data, batch_size=4))
        again = indexer.ingest("photos", IngestRequest(paths=(str(photos),)))
        assert (again.indexed, again.unchanged, again.moved) == (0, PHOTOS, 0)
        assert assert_index_matches_catalog(catalog, indexes, collection) == ids
    finally:
        indexes.close()
        catalog.close()
