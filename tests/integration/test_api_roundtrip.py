"""End to end over a real loopback server: upload, search, serve files, jobs, delete."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.api_helpers import LiveServer, api_settings, live_server, photo_jpeg, wait_until
from vizdex.encoders.base import Encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.web.settings import LimitSettings


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    cpu_settings: EncoderSettings,
    clip_encoder: Encoder,
    dino_encoder: Encoder,
) -> Iterator[LiveServer]:
    data_dir: Path = tmp_path_factory.mktemp("e2e") / "data"
    settings = api_settings(data_dir, cpu_settings)
    # Uploads of more than 4 images become background jobs.
    settings = replace(settings, limits=LimitSettings(upload_sync_images=4))
    models = {clip_encoder.name: clip_encoder, dino_encoder.name: dino_encoder}
    with live_server(settings, models) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as http:
        yield http


def test_upload_search_delete(client: httpx.Client, clip_encoder: Encoder) -> None:
    created = client.post("/v1/collections", json={"name": "e2e"})
    assert created.status_code == 201, created.text
    files = [
        ("images", (f"photo-{i}.jpg", photo_jpeg(i, 160, 120), "image/jpeg")) for i in range(4)
    ]
    uploaded = client.post(
        "/v1/collections/e2e/images", files=files, data={"metadata": json.dumps({"trip": "alps"})}
    )
    assert uploaded.status_code == 201, uploaded.text
    body = uploaded.json()
    assert body["state"] == "done" and body["indexed"] == 4
    ids = [result["id"] for result in body["results"]]
    assert [r["status"] for r in body["results"]] == ["indexed"] * 4 and all(ids)

    query = base64.b64encode(photo_jpeg(2, 160, 120)).decode()
    found = client.post("/v1/collections/e2e/search", json={"image": query, "k": 4}).json()
    assert found["hits"][0]["id"] == ids[2]
    assert found["hits"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert found["hits"][0]["metadata"] == {"trip": "alps"}

    by_text = client.post("/v1/collections/e2e/search", json={"text": "a photo of mountains"})
    assert by_text.status_code == 200
    assert {hit["id"] for hit in by_text.json()["hits"]} == set(ids)

    thumbnail = client.get(found["hits"][0]["thumbnail_url"])
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/webp"
    assert max(Image.open(io.BytesIO(thumbnail.content)).size) <= 256
    original = client.get(found["hits"][0]["file_url"])
    assert original.status_code == 200 and original.content == photo_jpeg(2, 160, 120)
    assert original.headers["content-type"] == "image/jpeg"

    again = client.post("/v1/collections/e2e/images", files=files[:1])
    assert again.status_code == 200 and again.json()["results"][0] == {
        "index": 0,
        "name": "photo-0.jpg",
        "status": "duplicate",
        "id": ids[0],
        "code": None,
        "detail": None,
    }

    assert client.delete(f"/v1/collections/e2e/images/{ids[2]}").status_code == 204
    after = client.post("/v1/collections/e2e/search", json={"image": query, "k": 4}).json()
    assert ids[2] not in [hit["id"] for hit in after["hits"]]
    assert client.get(f"/v1/collections/e2e/images/{ids[2]}").status_code == 404
    assert client.delete("/v1/collections/e2e").status_code == 204
    gone = client.post("/v1/collections/e2e/search", json={"image": query})
    assert gone.status_code == 404


def test_json_uploads_with_metadata_and_failures(client: httpx.Client) -> None:
    client.post("/v1/collections", json={"name": "json-up"})
    good = base64.b64encode(photo_jpeg(10)).decode()
    out = client.post(
        "/v1/collections/json-up/images",
        json={
            "metadata": {"source": "api", "n": 0},
            "images": [
                {"data": good, "name": "ten.jpg", "metadata": {"n": 10}},
                {"data": base64.b64encode(b"GIF89a broken").decode(), "name": "bad.gif"},
            ],
        },
    )
    assert out.status_code == 201, out.text
    results = out.json()["results"]
    assert results[0]["status"] == "indexed" and results[1]["status"] == "failed"
    assert results[1]["code"] and results[1]["detail"]
    image = client.get(f"/v1/collections/json-up/images/{results[0]['id']}").json()
    assert image["metadata"] == {"source": "api", "n": 10}
    assert image["original_name"] == "ten.jpg" and image["source"] == "upload"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"images": []}, 400),
        ({"images": [{}]}, 422),
        ({"images": [{"data": "x", "url": "http://a"}]}, 422),
        ({"images": [{"data": "!!"}]}, 422),
        ({"images": [{"url": "http://127.0.0.1/a.jpg"}]}, 403),  # URLs are off: forbidden_url
        ({"images": [{"url": "https://a.example/x.jpg"}], "metadata": {"k": 1}}, 422),
        ({"images": [{"data": "aGk="}], "metadata": [1]}, 400),
    ],
)
def test_upload_refusals(client: httpx.Client, body: object, status: int) -> None:
    client.post("/v1/collections", json={"name": "refusals"})
    out = client.post("/v1/collections/refusals/images", json=body)
    assert out.status_code == status, out.text


def test_upload_to_missing_collection_and_bad_forms(client: httpx.Client) -> None:
    files = [("images", ("a.jpg", photo_jpeg(1), "image/jpeg"))]
    assert client.post("/v1/collections/none/images", files=files).status_code == 404
    client.post("/v1/collections", json={"name": "forms"})
    # A form that is not multipart is the wrong media type; a multipart one without images, 400.
    urlencoded = client.post("/v1/collections/forms/images", data={"metadata": "{}"})
    assert urlencoded.status_code == 415, urlencoded.text
    assert urlencoded.json()["code"] == "unsupported_media_type"
    no_files = client.post("/v1/collections/forms/images", files=[("metadata", (None, "{}"))])
    assert no_files.status_code == 400, no_files.text
    assert no_files.json()["code"] == "invalid_request"
    bad_meta = client.post("/v1/collections/forms/images", files=files, data={"metadata": "[1"})
    assert bad_meta.status_code == 400


def test_large_upload_becomes_a_job(client: httpx.Client) -> None:
    client.post("/v1/collections", json={"name": "big"})
    files = [("images", (f"{i}.jpg", photo_jpeg(100 + i, 64, 48), "image/jpeg")) for i in range(6)]
    accepted = client.post("/v1/collections/big/images", files=files)
    assert accepted.status_code == 202, accepted.text
    job_url = accepted.json()["job_url"]
    assert accepted.headers["location"] == job_url

    def finished() -> bool:
        return bool(client.get(job_url).json()["state"] in ("done", "failed", "cancelled"))

    wait_until(finished, timeout=120, what="the upload job")
    job = client.get(job_url).json()
    assert (job["state"], job["done"], job["progress"], job["collection"]) == (
        "done",
        6,
        1.0,
        "big",
    )
    assert client.get("/v1/collections/big").json()["image_count"] == 6


def test_file_and_thumbnail_errors(client: httpx.Client) -> None:
    assert client.get("/v1/collections/none/images/1/file").status_code == 404
    assert client.get("/v1/collections/none/images/1/thumbnail").status_code == 404
    client.post("/v1/collections", json={"name": "files"})
    assert client.get("/v1/collections/files/images/424242/thumbnail").status_code == 404


def test_a_thumbnail_whose_file_is_gone_is_remade(client: httpx.Client, server: LiveServer) -> None:
    """The reference: made at ingestion, or on the first request for images that have none."""
    client.post("/v1/collections", json={"name": "thumbs"})
    photo = photo_jpeg(40, 640, 480)
    files = [("images", ("wide.jpg", photo, "image/jpeg"))]
    uploaded = client.post("/v1/collections/thumbs/images", files=files)
    assert uploaded.status_code == 201, uploaded.text
    image_id = uploaded.json()["results"][0]["id"]
    url = f"/v1/collections/thumbs/images/{image_id}/thumbnail"
    made = client.get(url)
    assert made.status_code == 200 and made.headers["content-type"] == "image/webp"

    catalog = server.state.search.catalog
    record = catalog.get_image(catalog.get_collection("thumbs").id, image_id)
    assert record.thumbnail_path is not None
    stored = server.state.store.resolve(record.thumbnail_path)
    assert stored.read_bytes() == made.content  # the route serves the recorded file
    stored.unlink()  # e.g. lost with a volume, or cleaned up by hand

    remade = client.get(url)
    assert remade.status_code == 200, remade.text
    assert remade.headers["content-type"] == "image/webp"
    assert stored.is_file() and stored.read_bytes() == remade.content  # made again, kept
    with Image.open(io.BytesIO(made.content)) as before, Image.open(stored) as after:
        assert after.format == "WEBP" and after.size == before.size == (256, 192)
        difference = np.abs(
            np.asarray(after.convert("RGB"), np.int16) - np.asarray(before.convert("RGB"), np.int16)
        )
        assert difference.max() <= 2  # the same picture (same original, same settings)
