"""Every item of an upload is answered for at its own place in the request, URLs included.

An adversarial run found sync JSON uploads numbering `results` by uploads only, with URL items
missing from them, and background uploads naming a failed image by its place among the uploads.
"""

from __future__ import annotations

import base64
import http.server
import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.api_helpers import (
    LiveServer,
    api_settings,
    live_server,
    photo_jpeg,
    wait_until,
)
from vizdex.encoders.base import Encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.imaging import ImageInputSettings
from vizdex.web.settings import LimitSettings

SYNC_IMAGES = 8  # more items than this in one request become a background job
BROKEN = base64.b64encode(b"GIF89a broken").decode("ascii")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class _ImageServer(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _Handler(http.server.BaseHTTPRequestHandler):
    """``/photo-<seed>.jpg`` is a photo; anything else is an HTML page."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        photo = re.fullmatch(r"/photo-(\d+)\.jpg", self.path)
        body = photo_jpeg(int(photo[1])) if photo else b"<html>not an image</html>"
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg" if photo else "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def images() -> Iterator[str]:
    server = _ImageServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, cpu_settings: EncoderSettings, clip_encoder: Encoder
) -> Iterator[LiveServer]:
    settings = api_settings(
        tmp_path_factory.mktemp("upload-items") / "data",
        cpu_settings,
        images=ImageInputSettings(allow_urls=True, allowed_networks=("127.0.0.0/8",)),
        limits=LimitSettings(upload_sync_images=SYNC_IMAGES),
    )
    with live_server(settings, {clip_encoder.name: clip_encoder}) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as http:
        yield http


def _collection(client: httpx.Client, name: str) -> str:
    assert client.post("/v1/collections", json={"name": name}).status_code == 201
    return f"/v1/collections/{name}/images"


def _rows(answer: dict[str, Any]) -> list[tuple[int, str | None, str, str | None]]:
    return [(r["index"], r["name"], r["status"], r["code"]) for r in answer["results"]]


def test_a_sync_upload_answers_for_every_item_at_its_place(
    client: httpx.Client, images: str
) -> None:
    path = _collection(client, "mixed")
    urls = [f"{images}/photo-1.jpg", f"{images}/page.html", "http://127.0.0.1:9/gone.jpg"]
    body = {
        "images": [
            {"url": urls[0]},
            {"data": b64(photo_jpeg(2)), "name": "two.jpg"},
            {"url": urls[1]},
            {"data": BROKEN, "name": "bad.gif"},
            {"url": urls[2]},  # nothing listens there
            {"data": b64(photo_jpeg(3))},
        ]
    }
    first = client.post(path, json=body)
    assert first.status_code == 201, first.text
    answer = first.json()
    rows = _rows(answer)
    assert [row[:3] for row in rows] == [
        (0, urls[0], "indexed"),
        (1, "two.jpg", "indexed"),
        (2, urls[1], "failed"),
        (3, "bad.gif", "failed"),
        (4, urls[2], "failed"),
        (5, None, "indexed"),
    ]
    assert rows[2][3] == "unsupported_format" and rows[4][3] == "fetch_failed" and rows[3][3]
    ids = [r["id"] for r in answer["results"]]
    assert len({ids[0], ids[1], ids[5]}) == 3 and ids[2] is ids[3] is ids[4] is None
    assert (answer["indexed"], answer["duplicates"], answer["failed"]) == (3, 0, 3)
    # The URL image is the one its result names.
    record = client.get(f"{path}/{ids[0]}").json()
    assert record["source"] == "url" and record["original_name"] == "photo-1.jpg"

    # The same again: the URL already ingested and the same bytes both answer with their ids.
    again = client.post(path, json=body)
    assert again.status_code == 200, again.text
    answer = again.json()
    assert [(row[0], row[2]) for row in _rows(answer)] == [
        (0, "duplicate"),
        (1, "duplicate"),
        (2, "failed"),
        (3, "failed"),
        (4, "failed"),
        (5, "duplicate"),
    ]
    assert [r["id"] for r in answer["results"]] == ids
    assert (answer["indexed"], answer["duplicates"], answer["failed"]) == (0, 3, 3)


def test_a_background_upload_names_items_by_their_place(client: httpx.Client, images: str) -> None:
    path = _collection(client, "mixed-job")
    page = f"{images}/page.html"
    body = {
        "images": [
            {"url": page},
            {"data": BROKEN, "name": "bad.gif"},
            {"url": f"{images}/photo-20.jpg"},
            *({"data": b64(photo_jpeg(seed))} for seed in range(21, 21 + SYNC_IMAGES - 2)),
        ]
    }
    accepted = client.post(path, json=body)
    assert accepted.status_code == 202, accepted.text
    job_url = accepted.json()["job_url"]
    wait_until(
        lambda: client.get(job_url).json()["state"] in ("done", "failed", "cancelled"),
        timeout=120,
        what="the upload job to finish",
    )
    job = client.get(job_url).json()
    assert (job["state"], job["total"], job["done"], job["failed"]) == (
        "done",
        SYNC_IMAGES + 1,
        SYNC_IMAGES - 1,
        2,
    )
    # The broken image is the request's second item, whatever came before it.
    assert sorted(failure["item"] for failure in job["failures"]) == [page, "upload #2 (bad.gif)"]


def test_a_url_the_policy_refuses_fails_alone_and_a_malformed_one_refuses_the_request(
    client: httpx.Client,
) -> None:
    """A scheme other than http(s) is refused by the fetch policy, item by item, with the code
    every other route gives it (forbidden_url; it was a whole-request invalid_input here). A URL
    that does not parse is the request's syntax, like undecodable base64: nothing is indexed."""
    path = _collection(client, "schemes")
    good = {"data": b64(photo_jpeg(7)), "name": "good.jpg"}
    for url in ("ftp://127.0.0.1/a.jpg", "file:///etc/passwd", "gopher://127.0.0.1/x"):
        out = client.post(path, json={"images": [good, {"url": url}]})
        assert out.status_code in (200, 201), out.text
        assert [row[2:] for row in _rows(out.json())] == [
            ("indexed" if url.startswith("ftp") else "duplicate", None),
            ("failed", "forbidden_url"),
        ], url
        encode = client.post("/v1/vision/encode", json={"images": [{"url": url}]})
        assert (encode.status_code, encode.json()["code"]) == (403, "forbidden_url")
    other = {"data": b64(photo_jpeg(8)), "name": "other.jpg"}
    out = client.post(path, json={"images": [other, {"url": "http://[::1/"}]})
    assert (out.status_code, out.json()["code"]) == (422, "invalid_url"), out.text
    listed = client.get(path).json()
    assert [image["original_name"] for image in listed["images"]] == ["good.jpg"]
