"""The README's backup and restore procedure, run as written, gives back the same search results.

The shell commands are read out of README.md ("### Backing up" / "### Restoring") and run with
bash, so the documentation and this test cannot drift apart. The backup is taken while the
service is up (its commits still in the WAL) and while another connection holds SQLite's write
lock with uncommitted changes; the original data directory is then deleted, restored into a new
one, and the service started on it must answer every query exactly as before. A second backup is
taken while an ingestion job commits batch after batch: it must restore a consistent prefix.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from tests.support.api_helpers import api_client, api_settings, photo_jpeg, state_of
from tests.support.ingest_helpers import photo_folder
from vizdex.cli.main import main
from vizdex.encoders.base import Encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.indexer import IndexerSettings, IngestRequest, ProgressSnapshot, Upload
from vizdex.search import JobState

ROOT = Path(__file__).parents[2]
COLLECTION = "photos"
PROBE_TABLE = "backup_probe"
# The backup during an ingestion starts once this many images are committed, and the job is held
# at this many until the backup has finished.
BACKUP_STARTS_AT, JOB_HELD_AT = 4, 16


def readme_block(heading: str) -> str:
    """The first ```bash block under ``### heading`` in README.md."""
    readme = (ROOT / "README.md").read_text()
    section = re.split(r"\n##+ ", readme.split(f"\n### {heading}\n", 1)[1], maxsplit=1)[0]
    match = re.search(r"```bash\n(.*?)\n```", section, flags=re.S)
    assert match, f"README.md has no bash block under '### {heading}'"
    return match.group(1)


def run_documented(block: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Runs README shell text as a person would: bash, in ``cwd``, this venv's tools first."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("VIZDEX_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@contextmanager
def write_lock_held(database: Path) -> Iterator[None]:
    """Another writer inside a transaction: holds SQLite's write lock, changes uncommitted."""
    writer = sqlite3.connect(database, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute(f"CREATE TABLE {PROBE_TABLE} (x INTEGER)")
        writer.execute(f"INSERT INTO {PROBE_TABLE} VALUES (1)")
        yield
        writer.execute("ROLLBACK")
    finally:
        writer.close()


def queries(uploaded_id: int) -> dict[str, dict[str, Any]]:
    query_image = base64.b64encode(photo_jpeg(101, 160, 120)).decode("ascii")
    return {
        "text": {"text": "a red bicycle in the snow", "k": 12},
        "image": {"image": query_image, "k": 12},
        "image_id": {"image_id": uploaded_id, "k": 12},
        "fused": {"image_id": uploaded_id, "k": 12, "fuse": True},
        "paged": {"text": "a beach at sunset", "k": 4, "offset": 3},
    }


def api_results(client: TestClient[Litestar], uploaded_id: int) -> dict[str, Any]:
    """What the HTTP API answers: per query the model and every hit's id, score(s) and name."""
    out: dict[str, Any] = {}
    for name, body in queries(uploaded_id).items():
        response = client.post(f"/v1/collections/{COLLECTION}/search", json=body)
        assert response.status_code == 200, response.text
        data = response.json()
        out[name] = {
            "model": data["model"],
            "fused": data["fused"],
            "hits": [
                (hit["id"], hit["score"], hit["scores"], hit["original_name"])
                for hit in data["hits"]
            ],
        }
        assert out[name]["hits"], f"{name}: no hits, nothing would be compared"
    return out


def image_bytes(client: TestClient[Litestar], image_id: int) -> tuple[bytes, bytes]:
    base = f"/v1/collections/{COLLECTION}/images/{image_id}"
    original = client.get(f"{base}/file")
    thumbnail = client.get(f"{base}/thumbnail")
    assert original.status_code == 200 and thumbnail.status_code == 200
    return original.content, thumbnail.content


def cli_results(capsys: pytest.CaptureFixture[str], data: Path, photo: Path) -> list[Any]:
    """What ``vizdex search --json`` prints for a text and an image query."""
    capsys.readouterr()
    results = []
    for query in (["--text", "a red bicycle in the snow"], ["--image", str(photo)]):
        argv = ["search", "-c", COLLECTION, *query, "-k", "10", "--json", "--device", "cpu"]
        assert main([*argv, "--data-dir", str(data)]) == 0
        output = json.loads(capsys.readouterr().out)
        results.append([output["model"], [(h["id"], h["score"]) for h in output["hits"]]])
    return results


def test_documented_online_backup_restores_identical_search_results(
    tmp_path: Path,
    tiny_clip_dir: Path,
    tiny_dino_dir: Path,
    cpu_settings: EncoderSettings,
    clip_encoder: Encoder,
    dino_encoder: Encoder,
    capsys: pytest.CaptureFixture[str],
) -> None:
    backup_block = readme_block("Backing up")
    restore_block = readme_block("Restoring")
    data = tmp_path / "vizdex-data"  # the README's commands name this folder, relative to cwd
    photos = photo_folder(tmp_path / "photos", 8)
    models = {clip_encoder.name: clip_encoder, dino_encoder.name: dino_encoder}

    # A two-model collection from a folder, through the CLI ...
    flags = ["--model", str(tiny_clip_dir), "--model", str(tiny_dino_dir)]
    argv = ["ingest", str(tmp_path / "photos"), "-c", COLLECTION, *flags, "--data-dir", str(data)]
    assert main([*argv, "--device", "cpu", "--batch-size", "4", "--quiet", "--json"]) == 0

    # ... plus uploads through the running service, which keep originals in the data dir.
    with api_client(api_settings(data, cpu_settings), models) as client:
        files = [
            ("images", (f"upload-{seed}.jpg", photo_jpeg(seed, 160, 120), "image/jpeg"))
            for seed in (101, 102, 103)
        ]
        uploaded = client.post(f"/v1/collections/{COLLECTION}/images", files=files)
        assert uploaded.status_code == 201, uploaded.text
        uploaded_ids = [result["id"] for result in uploaded.json()["results"]]
        assert len(uploaded_ids) == 3 and all(uploaded_ids)

        before = api_results(client, uploaded_ids[0])
        before_files = image_bytes(client, uploaded_ids[1])
        before_cli = cli_results(capsys, data, photos[2])
        assert before["fused"]["fused"] and before["image"]["model"] == str(tiny_dino_dir)

        # The backup, exactly as documented, while the service has the catalog open (the
        # uploads' commits are still in the WAL) and another writer holds the write lock.
        assert (data / "catalog.db-wal").stat().st_size > 0
        with write_lock_held(data / "catalog.db"):
            backed_up = run_documented(backup_block, cwd=tmp_path)
        assert backed_up.returncode == 0, backed_up.stderr

    backup = tmp_path / "backup"
    assert sorted(entry.name for entry in backup.iterdir()) == ["catalog.db", "originals", "thumbs"]

    shutil.rmtree(data)
    restored = run_documented(restore_block, cwd=tmp_path)
    assert restored.returncode == 0, restored.stderr
    assert sorted(entry.name for entry in data.iterdir()) == ["catalog.db", "originals", "thumbs"]
    with closing(sqlite3.connect(data / "catalog.db")) as check:
        probe = check.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = ?", (PROBE_TABLE,)
        ).fetchone()
    assert probe == (0,), "an uncommitted change made it into the backup"

    # Started on the restored directory (what `vizdex serve` does): indexes rebuilt on start.
    with api_client(api_settings(data, cpu_settings), models) as client:
        assert client.get("/health/ready").status_code == 200
        assert api_results(client, uploaded_ids[0]) == before
        assert image_bytes(client, uploaded_ids[1]) == before_files
    assert list((data / "indexes").rglob("*.vdx")), "the service did not rebuild the indexes"

    assert cli_results(capsys, data, photos[2]) == before_cli
    capsys.readouterr()
    assert main(["reindex", "-c", COLLECTION, "--data-dir", str(data), "--json"]) == 0
    assert cli_results(capsys, data, photos[2]) == before_cli


def test_a_backup_taken_while_an_ingestion_writes_restores_a_consistent_prefix(
    tmp_path: Path,
    cpu_settings: EncoderSettings,
    clip_encoder: Encoder,
    dino_encoder: Encoder,
) -> None:
    """The README: "Safe while vizdex serves and ingests". Batches are committed while it runs."""
    backup_block = readme_block("Backing up")
    restore_block = readme_block("Restoring")
    data = tmp_path / "vizdex-data"
    models = {clip_encoder.name: clip_encoder, dino_encoder.name: dino_encoder}
    indexer = IndexerSettings(data_dir=data, batch_size=2, workers=1)
    settings = api_settings(data, cpu_settings, indexer=indexer)
    names = [f"upload-{i:02d}.jpg" for i in range(24)]
    uploads = tuple(
        Upload(photo_jpeg(200 + i, 160, 120), name=name) for i, name in enumerate(names)
    )
    backups: list[subprocess.CompletedProcess[str]] = []
    started, backup_done = threading.Event(), threading.Event()
    processed: list[int] = []

    def take_backup() -> None:
        try:
            backups.append(run_documented(backup_block, cwd=tmp_path))
        finally:
            backup_done.set()

    def progress(snapshot: ProgressSnapshot) -> None:
        # Called by the job's writer after each committed batch; the writer waits for it.
        processed.append(snapshot.processed)
        if snapshot.processed >= BACKUP_STARTS_AT and not started.is_set():
            started.set()  # a few batches in: start the backup, and let the writer go on
            threading.Thread(target=take_backup, daemon=True).start()
        if snapshot.processed >= JOB_HELD_AT:
            # The job does not get past this point before the backup is over: it was writing,
            # and far from done, for the backup's whole run.
            assert backup_done.wait(240), "the backup did not finish"

    with api_client(settings, models) as client:
        assert client.post("/v1/collections", json={"name": COLLECTION}).status_code == 201
        state = state_of(client.app)
        job = state.indexer.submit(COLLECTION, IngestRequest(uploads=uploads), progress=progress)
        report = state.indexer.wait(job.id, timeout=300)
        # The writers were never refused or blocked for good by the backup.
        assert report.state is JobState.DONE and report.indexed == len(names)
    (backed_up,) = backups
    assert backed_up.returncode == 0, backed_up.stderr
    committed_before = next(p for p in processed if p >= BACKUP_STARTS_AT)  # when the backup began

    shutil.rmtree(data)
    restored = run_documented(restore_block, cwd=tmp_path)
    assert restored.returncode == 0, restored.stderr
    with api_client(api_settings(data, cpu_settings), models) as client:
        assert client.get("/health/ready").status_code == 200
        listed = client.get(f"/v1/collections/{COLLECTION}/images", params={"limit": 100}).json()
        images = listed["images"]
        # One consistent snapshot: the batches committed up to some moment, nothing after, no
        # half batch and no hole: the first n uploads, n between what was committed when the
        # backup began and where the job was held until it ended.
        count = len(images)
        assert committed_before <= count <= JOB_HELD_AT + indexer.batch_size
        assert [image["original_name"] for image in images] == names[:count]
        for image in images:  # every restored row has its files and a vector per model
            base = f"/v1/collections/{COLLECTION}/images/{image['id']}"
            assert client.get(f"{base}/file").status_code == 200
            assert client.get(f"{base}/thumbnail").status_code == 200
            for model in models:
                body = {"image_id": image["id"], "model": model, "k": 1}
                search = client.post(f"/v1/collections/{COLLECTION}/search", json=body)
                assert search.status_code == 200, search.text
