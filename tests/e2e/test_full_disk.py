"""A full disk is `507 storage_full` (one line in the CLI), nothing is half-written, reads go on.

Found by an adversarial run on a 30 MB data disk: upload, `POST /v1/collections` and `PATCH`
answered 500 `internal_error` (ENOSPC, SQLite "database or disk is full"), and the CLI printed a
91-line traceback.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.api_helpers import LiveServer, api_settings, live_server, photo_jpeg
from tests.support.small_disk import fill, small_disk
from vizdex.cli.main import main
from vizdex.encoders.base import Encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.search import JobState


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk") as mounted:
        yield mounted


@pytest.fixture
def server(
    disk: Path, cpu_settings: EncoderSettings, clip_encoder: Encoder
) -> Iterator[LiveServer]:
    settings = api_settings(disk / "data", cpu_settings)
    with live_server(settings, {clip_encoder.name: clip_encoder}) as live:
        yield live


def _upload(client: httpx.Client, *seeds: int) -> httpx.Response:
    files = [("files", (f"{s}.jpg", photo_jpeg(s, 320, 240), "image/jpeg")) for s in seeds]
    return client.post("/v1/collections/c/images", files=files)


def test_writes_answer_507_reads_go_on_and_space_brings_writes_back(
    disk: Path, server: LiveServer
) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.post("/v1/collections", json={"name": "c"}).status_code == 201
        first = _upload(client, 1, 2)
        assert first.status_code == 201, first.text
        image_id = first.json()["results"][0]["id"]

        filler = fill(disk)
        for answer in (
            client.post("/v1/collections", json={"name": "d"}),
            _upload(client, 3, 4),
            client.patch(f"/v1/collections/c/images/{image_id}", json={"metadata": {"k": "v"}}),
        ):
            assert answer.status_code == 507, answer.text
            body = answer.json()
            assert body["code"] == "storage_full" and "free some space" in body["detail"]

        # Reads keep working on a full disk.
        assert [c["name"] for c in client.get("/v1/collections").json()["collections"]] == ["c"]
        hits = client.post("/v1/collections/c/search", json={"text": "a photo", "k": 5})
        assert hits.status_code == 200 and len(hits.json()["hits"]) == 2
        assert client.get(f"/v1/collections/c/images/{image_id}/file").status_code == 200

        filler.unlink()
        again = _upload(client, 3, 4)
        assert again.status_code == 201, again.text
        assert [r["status"] for r in again.json()["results"]] == ["indexed", "indexed"]
        assert client.post("/v1/collections", json={"name": "d"}).status_code == 201
        images = client.get("/v1/collections/c/images").json()["images"]
        assert sorted(i["original_name"] for i in images) == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    database = disk / "data" / "catalog.db"
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_every_other_write_route_answers_507_on_a_full_disk(disk: Path, server: LiveServer) -> None:
    """Neighbours of the routes above: the model routes, deletes and a background upload."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for name in ("c", "e"):
            assert client.post("/v1/collections", json={"name": name}).status_code == 201
        image_id = _upload(client, 1, 2).json()["results"][0]["id"]
        model = client.get("/v1/collections/c").json()["models"][0]
        filler = fill(disk)
        # More images than a synchronous upload takes: accepted as a job, spooled first.
        background = [
            ("files", (f"{seed}.jpg", photo_jpeg(seed, 32, 24), "image/jpeg"))
            for seed in range(10, 27)
        ]
        for answer in (
            client.patch("/v1/collections/c", json={"text_model": None, "image_model": None}),
            client.post("/v1/collections/c/models", json={"model": model}),
            client.delete(f"/v1/collections/c/images/{image_id}"),
            client.delete("/v1/collections/e"),
            client.post("/v1/collections/c/images", files=background),
        ):
            assert answer.status_code == 507, (
                answer.request.method,
                answer.request.url,
                answer.text,
            )
            assert answer.json()["code"] == "storage_full"
        filler.unlink()
        described = client.get("/v1/collections/c").json()
        assert (described["text_model"], described["image_model"]) == (model, model)
        assert described["image_count"] == 2
        assert client.get("/v1/collections/e").status_code == 200


def test_a_sync_upload_on_a_full_disk_finishes_its_job(disk: Path, server: LiveServer) -> None:
    """Found: a 507 upload could leave its job `pending` or `running` (its end could not be
    written either) until a reaper failed it as "interrupted". How much room is left decides
    which write fails first, so each upload here meets the disk full at another point."""
    catalog = server.state.search.catalog
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.post("/v1/collections", json={"name": "c"}).status_code == 201
        assert _upload(client, 1).status_code == 201
        answers = []
        for seed, room in enumerate(range(0, 96 * 1024, 4096), start=100):
            filler = fill(disk)
            os.truncate(filler, filler.stat().st_size - room)
            answer = _upload(client, seed)
            answers.append(answer.status_code)
            # Finished by the request itself: no reaper has had a turn yet.
            unfinished = [job.id for job in catalog.list_jobs(limit=1000) if not job.state.finished]
            filler.unlink()
            assert unfinished == [], (room, answer.text)
    assert 507 in answers and set(answers) <= {201, 507}
    failed = [job for job in catalog.list_jobs(limit=1000) if job.state is JobState.FAILED]
    assert failed, "no upload met the full disk after its job began"
    for job in failed:  # the reason is the disk, not an interruption found later
        assert job.error is not None and job.error.startswith("the disk"), job.error


def test_the_cli_says_the_disk_is_full_in_one_line(
    disk: Path, tiny_clip_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(disk / "data")]
    assert main(["collections", "create", "c", "--model", str(tiny_clip_dir), *data]) == 0
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(3):
        (photos / f"{seed}.jpg").write_bytes(photo_jpeg(seed, 320, 240))
    capsys.readouterr()
    fill(disk)
    for argv in (
        ["collections", "create", "d", "--model", str(tiny_clip_dir), *data],
        ["ingest", str(photos), "-c", "c", "--device", "cpu", "--quiet", *data],
    ):
        code = main(argv)
        err = capsys.readouterr().err
        assert code != 0
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith("vizdex: error: the disk") and "is full" in lines[0]


def test_gc_frees_a_full_disk(
    disk: Path, tiny_clip_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sweep is what a full disk calls for, yet it stopped with storage_full before removing
    anything: opening the catalog makes SQLite's WAL files. It now borrows the reserve."""
    data = disk / "data"
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "0.jpg").write_bytes(photo_jpeg(0, 320, 240))
    ingest = ["ingest", str(photos), "-c", "c", "--model", str(tiny_clip_dir), "--quiet"]
    assert main([*ingest, "--device", "cpu", "--data-dir", str(data)]) == 0
    orphan = data / "thumbs" / "zz" / ("ab" * 32 + ".webp")
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(os.urandom(2_000_000))
    os.utime(orphan, (1, 1))  # long past any grace period
    assert not (data / "catalog.db-wal").exists()  # closed cleanly: the next open makes it
    assert (data / "reserve").stat().st_size > 0  # kept by every ingestion
    filler = fill(disk)
    capsys.readouterr()
    assert main(["gc", "--data-dir", str(data)]) == 0, capsys.readouterr().err
    assert not orphan.exists()
    assert (data / "reserve").stat().st_size > 0  # taken back after the sweep
    filler.unlink()
