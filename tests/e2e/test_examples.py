"""The runnable examples (examples/) against a live server, as a user would run them.

Each script creates a collection, uploads generated photos, searches by text, by image and by id,
fetches files and deletes the collection. Uploads of up to ``SYNC_IMAGES`` images are indexed
before the answer and larger ones become a job, so both upload paths run. A missing ``curl`` is a
failure, not a skip: the walkthrough would otherwise go untested without anyone noticing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from tests.support.api_helpers import LiveServer, api_settings, live_server
from tests.support.synthetic_photos import jpeg_bytes, make_photo
from vizdex.encoders.base import Encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.web.settings import AuthSettings, LimitSettings

ROOT = Path(__file__).parents[2]
CURL_WALKTHROUGH = ROOT / "examples" / "curl_walkthrough.sh"
SEARCH_CLIENT = ROOT / "examples" / "search_client.py"
SYNC_IMAGES = 3
COUNTS = {"indexed-at-once": SYNC_IMAGES, "as-a-job": SYNC_IMAGES + 2}
ADMIN_KEY = "example-admin-key"
HIT = re.compile(r"^\s+(\d+)\. id=(\d+) score=(-?\d+\.\d+) (.+)$", re.M)
TOP_HIT = re.compile(r"top hit: id=(\d+) \(the query image is id (\d+)\)")
QUERY = re.compile(r"search by image: (?:upload )?(\S+) \(id (\d+)\)")


def _server(
    directory: Path, settings: EncoderSettings, model: Encoder, **extra: object
) -> AbstractContextManager[LiveServer]:
    limits = LimitSettings(upload_sync_images=SYNC_IMAGES)
    return live_server(
        api_settings(directory, settings, limits=limits, **extra), {model.name: model}
    )


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, cpu_settings: EncoderSettings, clip_encoder: Encoder
) -> Iterator[LiveServer]:
    with _server(tmp_path_factory.mktemp("examples") / "data", cpu_settings, clip_encoder) as live:
        yield live


def photos(directory: Path, count: int) -> Path:
    directory.mkdir(parents=True)
    for index in range(count):
        photo = make_photo(120, 90, seed=500 + index)
        (directory / f"photo{index}.jpg").write_bytes(jpeg_bytes(photo))
    (directory / "notes.txt").write_text("not an image: the examples pick image files only")
    return directory


def run(command: list[str], url: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith("VIZDEX_")},
        # The walkthrough reads JSON with python3: make it this interpreter.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "VIZDEX_URL": url,
        **env,
    }
    return subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=300, check=False
    )


def curl_command(images: Path) -> list[str]:
    missing = [tool for tool in ("bash", "curl") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} must be installed to test {CURL_WALKTHROUGH.name}")
    return ["bash", str(CURL_WALKTHROUGH), str(images)]


def client_command(images: Path, url: str, collection: str) -> list[str]:
    return [
        sys.executable,
        str(SEARCH_CLIENT),
        str(images),
        "--url",
        url,
        "--collection",
        collection,
        "--text",
        "a red bicycle in the snow",
    ]


def step(output: str, title: str) -> str:
    """The lines an example printed under its ``==> title...`` step."""
    for chunk in output.split("==> ")[1:]:
        if chunk.startswith(title):
            return chunk
    raise AssertionError(f"no step {title!r} in the output:\n{output}")


def check_run(output: str, server: LiveServer, collection: str, count: int) -> None:
    """The output shows real results, and the collection is gone afterwards."""
    text_hits = HIT.findall(step(output, "search by text"))
    assert len(text_hits) == min(3, count), output

    top = TOP_HIT.search(output)
    query = QUERY.search(output)
    assert top is not None and query is not None, output
    assert top[1] == top[2] == query[2], output  # the searched image finds itself first
    image_hits = HIT.findall(step(output, "search by image"))
    assert image_hits[0][1] == query[2] and float(image_hits[0][2]) > 0.99, output
    assert image_hits[0][3] == query[1], output

    similar = HIT.findall(step(output, "search by id"))
    assert len(similar) == min(3, count - 1), output
    assert query[2] not in [hit[1] for hit in similar], output  # never itself
    assert re.search(r"thumbnail: \d+ bytes, image/webp", output), output

    delete = step(output, "delete collection")
    assert f"GET /v1/collections/{collection} -> 404" in delete, output
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    answer = httpx.get(f"{server.url}/v1/collections/{collection}", headers=headers, timeout=30)
    assert answer.status_code == 404 and answer.json()["code"] == "collection_not_found"


@pytest.mark.parametrize("mode", list(COUNTS))
def test_curl_walkthrough(server: LiveServer, tmp_path: Path, mode: str) -> None:
    count = COUNTS[mode]
    images = photos(tmp_path / "images", count)
    collection = f"curl-{mode}"
    result = run(curl_command(images), server.url, VIZDEX_COLLECTION=collection)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    upload = step(output, "upload the images")
    if count > SYNC_IMAGES:
        assert "-> 202" in upload and "accepted as a job" in upload, output
        assert f"done: {count} done, 0 skipped, 0 failed of {count}" in upload, output
    else:
        assert "-> 201" in upload and f"indexed {count}, duplicates 0, failed 0" in upload
    assert f"{count} images; indexes:" in step(output, "the collection now"), output
    assert re.search(r"file: \d+ bytes, image/jpeg", output), output
    check_run(output, server, collection, count)


@pytest.mark.parametrize("mode", list(COUNTS))
def test_search_client(server: LiveServer, tmp_path: Path, mode: str) -> None:
    count = COUNTS[mode]
    images = photos(tmp_path / "images", count)
    collection = f"client-{mode}"
    result = run(client_command(images, server.url, collection), server.url)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    upload = step(output, f"upload {count} images")
    if count > SYNC_IMAGES:
        assert "accepted as job" in upload and f"done: {count} done" in upload, output
    else:
        assert f"indexed {count}, duplicates 0, failed 0" in upload, output
    check_run(output, server, collection, count)


def test_examples_show_the_api_error_reason(server: LiveServer, tmp_path: Path) -> None:
    images = photos(tmp_path / "images", 1)
    bad = "not a valid name!"
    walkthrough = run(curl_command(images), server.url, VIZDEX_COLLECTION=bad)
    client = run(client_command(images, server.url, bad), server.url)
    for result in (walkthrough, client):
        assert result.returncode == 1, result.stdout + result.stderr
        assert "error: 422 invalid_input: collection name" in result.stderr, result.stderr
    listed = httpx.get(f"{server.url}/v1/collections", timeout=30).json()["collections"]
    assert bad not in [c["name"] for c in listed]


def test_examples_send_the_api_key(
    tmp_path: Path, cpu_settings: EncoderSettings, clip_encoder: Encoder
) -> None:
    images = photos(tmp_path / "images", 2)
    keys = AuthSettings(admin_keys=(ADMIN_KEY,))
    with _server(tmp_path / "data", cpu_settings, clip_encoder, auth=keys) as keyed:
        without = run(client_command(images, keyed.url, "keyed"), keyed.url)
        assert without.returncode == 1
        assert "error: 401 unauthorized: an API key is required" in without.stderr
        walkthrough = run(
            curl_command(images), keyed.url, VIZDEX_COLLECTION="keyed", VIZDEX_API_KEY=ADMIN_KEY
        )
        assert walkthrough.returncode == 0, walkthrough.stdout + walkthrough.stderr
        check_run(walkthrough.stdout, keyed, "keyed", 2)
