"""What stands where a folder of the data directory belongs, and folders kept elsewhere by links.

Found by the second adversarial run: a file, a FIFO or a broken link at `thumbs/`, `tmp/` or
`originals/` made every upload (or thumbnail) a 500; one at `locks/` (or a folder at
`locks/jobs.lock`) stopped the server's start with a traceback; and thumbnails kept on another
disk through a link were each a 500, "outside the data directory". Scratch folders are now moved
aside and made again, as index folders are; originals, the only copy of uploads, stop a command
or the server's start with the reason in one line.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.support.api_helpers import api_settings, live_server, photo_jpeg
from tests.support.ingest_helpers import photo_folder
from vizdex.cli.main import main
from vizdex.cli.serve import check_data_dir
from vizdex.core.errors import UnavailableError
from vizdex.encoders.base import Encoder
from vizdex.encoders.settings import EncoderSettings


def _upload_and_read_back(url: str) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/v1/collections", json={"name": "c"}).status_code == 201
        files = [("files", (f"{i}.jpg", photo_jpeg(i), "image/jpeg")) for i in range(2)]
        answer = client.post("/v1/collections/c/images", files=files)
        assert answer.status_code == 201, answer.text
        for result in answer.json()["results"]:
            for part in ("file", "thumbnail"):
                got = client.get(f"/v1/collections/c/images/{result['id']}/{part}")
                assert got.status_code == 200, got.text


def test_the_server_starts_and_writes_past_what_stands_in_scratch_folders(
    tmp_path: Path, cpu_settings: EncoderSettings, clip_encoder: Encoder
) -> None:
    data = tmp_path / "data"
    (data / "locks").mkdir(parents=True)
    (data / "locks" / "jobs.lock").mkdir()  # was: the start failed, IsADirectoryError
    (data / "thumbs").write_bytes(b"")
    os.mkfifo(data / "tmp")
    (data / "originals").symlink_to(data / "originals")  # a loop: the one folder not moved
    with pytest.raises(UnavailableError, match="originals should be a folder"):
        check_data_dir(api_settings(data, cpu_settings))
    (data / "originals").unlink()
    with live_server(api_settings(data, cpu_settings), {clip_encoder.name: clip_encoder}) as live:
        _upload_and_read_back(live.url)
    for aside in ("thumbs.corrupt", "tmp.corrupt", "locks/jobs.lock.corrupt"):
        assert os.path.lexists(data / aside), aside


def test_thumbnails_and_originals_on_another_disk_are_served(
    tmp_path: Path, cpu_settings: EncoderSettings, clip_encoder: Encoder
) -> None:
    data, other = tmp_path / "data", tmp_path / "other-disk"
    data.mkdir()
    for folder in ("thumbs", "originals"):
        (other / folder).mkdir(parents=True)
        (data / folder).symlink_to(other / folder)
    with live_server(api_settings(data, cpu_settings), {clip_encoder.name: clip_encoder}) as live:
        _upload_and_read_back(live.url)
    assert len(list((other / "thumbs").rglob("*.webp"))) == 2


def test_the_cli_names_an_originals_folder_that_is_not_one(
    tmp_path: Path, tiny_clip_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "originals").symlink_to(tmp_path / "unmounted")
    photo_folder(tmp_path / "photos", 2)
    photos = tmp_path / "photos"
    argv = ["ingest", str(photos), "-c", "c", "--model", str(tiny_clip_dir), "--device", "cpu"]
    code = main([*argv, "--data-dir", str(data), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{data / 'originals'} should be a folder but is a link to" in err
