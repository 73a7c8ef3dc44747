"""``vizdex ingest --ray`` killed with SIGKILL after its first committed batch, then run again:
every image is embedded exactly once, the killed run's job is reaped and the rerun's finishes.

Real subprocesses (each the driver of a local Ray cluster it starts itself), the real command line,
tiny random CLIP and DINOv3 checkpoints. The kill lands at a known point: the driver is held right
after its first commit (``tests/support/ray_driver.py``), not caught at a lucky moment.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.ingest_helpers import (
    all_images,
    assert_index_matches_catalog,
    offline_env,
    photo_folder,
)
from tests.support.ray_driver import HOLD
from vizdex.search import Catalog, IndexStore, JobState, SearchSettings

pytest.importorskip("ray")

REPO = Path(__file__).parents[2]
PHOTOS = 12


def test_a_ray_ingest_killed_after_a_commit_resumes_and_embeds_every_image_once(
    tmp_path: Path, tiny_clip_dir: Path, tiny_dino_dir: Path
) -> None:
    photos = tmp_path / "photos"
    photo_folder(photos, PHOTOS, per_folder=4)
    data = tmp_path / "data"
    clip, dino = str(tiny_clip_dir), str(tiny_dino_dir)
    command = [
        sys.executable,
        "-m",
        "tests.support.ray_driver",
        "ingest",
        str(photos),
        "--collection",
        "c",
        "--model",
        clip,
        "--model",
        dino,
        "--ray",
        "auto",
        "--batch-size",
        "2",
        "--quiet",
        "--json",
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--data-dir",
        str(data),
    ]
    marker = tmp_path / "committed"
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=offline_env(tmp_path, **{HOLD: str(marker), "PYTHONPATH": str(REPO)}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its cluster's processes in its group, to tidy up at the end
    )
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():  # the driver says so itself once its first batch committed
            assert process.poll() is None, process.communicate()[1].decode()[-3000:]
            assert time.monotonic() < deadline, "the driver committed no batch"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)  # the driver alone: its cluster lives on a while
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
        _rerun_embeds_the_rest_once(command, tmp_path, data, clip, dino)
    finally:  # what is left of the killed driver's cluster (it would go by itself, later)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _rerun_embeds_the_rest_once(
    command: list[str], tmp_path: Path, data: Path, clip: str, dino: str
) -> None:

    settings = SearchSettings.for_data_dir(data)
    catalog = Catalog.open(settings.catalog)
    try:
        record = catalog.get_collection("c")
        committed = catalog.count_images(record.id)
        assert 1 <= committed <= 2, committed  # exactly the first batch: then it was held

        final = subprocess.run(
            command,
            cwd=REPO,
            env=offline_env(tmp_path, PYTHONPATH=str(REPO)),
            capture_output=True,
            timeout=300,
        )
        assert final.returncode == 0, final.stderr.decode()[-3000:]
        report = json.loads(final.stdout)
        assert report["state"] == "done"
        assert (report["indexed"], report["unchanged"], report["failed"]) == (
            PHOTOS - committed,
            committed,
            0,
        )

        images = all_images(catalog, record.id)
        assert len(images) == PHOTOS
        assert len({image.sha256 for image in images}) == PHOTOS  # no duplicates
        assert len({image.source_uri for image in images}) == PHOTOS
        assert catalog.model_coverage(record.id) == {clip: PHOTOS, dino: PHOTOS}
        # Exactly once: no vector was replaced (a replaced one leaves a tombstone).
        assert catalog.row_counts()["embedding_tombstones"] == 0
        jobs = sorted(catalog.list_jobs(collection_id=record.id), key=lambda job: job.id)
        assert [job.state for job in jobs] == [JobState.FAILED, JobState.DONE]
        assert jobs[-1].done == PHOTOS - committed
        indexes = IndexStore(catalog, settings.index)
        try:
            assert_index_matches_catalog(catalog, indexes, catalog.get_collection("c"))
        finally:
            indexes.close()
    finally:
        catalog.close()
