"""Every endpoint through HTTP (in-process client, tiny models): happy paths and error paths."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from litestar import Litestar
from litestar.testing import TestClient

from tests.support.api_helpers import (
    api_client,
    api_settings,
    database_unreachable,
    photo_b64,
    photo_jpeg,
    state_of,
)
from vizdex.encoders.base import Encoder
from vizdex.encoders.hf_encoder import HFEncoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.imaging import load_image
from vizdex.indexer.jobs import JobLocks, close_job, open_job
from vizdex.search import JobState, NewImage

Client = TestClient[Litestar]


@pytest.fixture(scope="module")
def models(clip_encoder: Encoder, dino_encoder: Encoder) -> dict[str, Encoder]:
    return {clip_encoder.name: clip_encoder, dino_encoder.name: dino_encoder}


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory,
    cpu_settings: EncoderSettings,
    models: dict[str, Encoder],
) -> Iterator[Client]:
    settings = api_settings(tmp_path_factory.mktemp("api") / "data", cpu_settings)
    with api_client(settings, models) as test_client:
        yield test_client


def add_photos(client: Client, models: dict[str, Encoder], collection: str) -> tuple[int, ...]:
    """A collection of 6 images embedded by both models, added through the service."""
    state = state_of(client.app)
    names = list(models)
    created = client.post("/v1/collections", json={"name": collection, "models": names})
    assert created.status_code == 201, created.text
    items = []
    for seed in range(6):
        decoded = load_image(photo_jpeg(seed), state.settings.images)
        vectors = {name: models[name].encode_images([decoded.image])[0] for name in names}
        items.append(
            NewImage(
                sha256=decoded.sha256,
                width=decoded.width,
                height=decoded.height,
                format=decoded.format,
                byte_size=decoded.byte_size,
                vectors=vectors,
                original_name=f"p{seed}.jpg",
                metadata={"seed": seed, "even": seed % 2 == 0},
            )
        )
    return tuple(a.id for a in state.search.add_images(collection, items))


@pytest.fixture(scope="module")
def seeded(client: Client, models: dict[str, Encoder]) -> tuple[int, ...]:
    """The ids of collection 'photos', shared by the module: no test changes its images."""
    return add_photos(client, models, "photos")


def error_code(response: Any) -> str:
    body = response.json()
    assert set(body) >= {"status_code", "code", "detail"}, body
    assert body["status_code"] == response.status_code
    code: str = body["code"]
    return code


# -- health, models, metrics -------------------------------------------------------------------


def test_probes(client: Client) -> None:
    assert client.get("/health/live").json() == {"status": "ok"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json() == {
        "status": "ready",
        "lag": 0,
        "collections_behind": 0,
    }
    with database_unreachable(state_of(client.app)):
        not_ready = client.get("/health/ready")
        assert not_ready.status_code == 503 and not_ready.json() == {"status": "starting"}
        assert client.get("/health/live").json() == {"status": "ok"}
    assert client.get("/health/ready").status_code == 200


def test_models(client: Client, models: dict[str, Encoder]) -> None:
    listed = client.get("/v1/models").json()["models"]
    assert [m["name"] for m in listed] == list(models)
    assert {m["kind"] for m in listed} == {"multimodal", "vision"}
    assert all(m["device"] == "cpu" and m["dimensions"] > 0 for m in listed)


def test_metrics_exposition(client: Client) -> None:
    client.post("/v1/vision/encode", json={"images": [photo_b64(1)]})
    client.get("/v1/jobs/999")
    text = client.get("/metrics").text
    assert (
        'vizdex_http_request_duration_seconds_count{method="POST",route="/v1/vision/encode"' in text
    )
    assert 'vizdex_errors_total{code="job_not_found",status="404"}' in text
    assert "vizdex_batch_size_bucket" in text and "vizdex_queue_depth" in text
    assert "vizdex_images_indexed" in text


def test_unknown_route_and_method(client: Client) -> None:
    assert error_code(client.get("/v1/nothing")) == "not_found"
    assert client.put("/v1/models").status_code == 405


# -- vision ------------------------------------------------------------------------------------


def test_vision_encode_json_forms(client: Client, models: dict[str, Encoder]) -> None:
    image = photo_b64(3)
    body = {"images": [image, {"data": image}, {"data": f"data:image/jpeg;base64,{image}"}]}
    out = client.post("/v1/vision/encode", json=body)
    assert out.status_code == 200, out.text
    data = out.json()
    vectors = np.asarray(data["embeddings"])
    assert vectors.shape == (3, data["dimensions"])
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert data["model"] == next(iter(models)) and data["processing_time"] > 0


def test_vision_encode_model_normalize_and_tensor(
    client: Client, models: dict[str, Encoder]
) -> None:
    dino = list(models)[1]
    raw = client.post(
        "/v1/vision/encode", json={"images": [photo_b64(4)], "model": dino, "normalize": False}
    ).json()
    assert raw["model"] == dino and abs(np.linalg.norm(raw["embeddings"][0]) - 1) > 1e-3
    packed = client.post(
        "/v1/vision/encode", json={"images": [photo_b64(4)] * 2, "return_tensors": True}
    ).json()
    assert packed["embeddings"] is None
    tensor = packed["tensor"]
    array = np.frombuffer(base64.b64decode(tensor["data"]), dtype="<f4").reshape(tensor["shape"])
    assert array.shape == (2, packed["dimensions"])


def test_vision_encode_multipart(client: Client, models: dict[str, Encoder]) -> None:
    files = [
        ("images", ("a.jpg", photo_jpeg(5), "image/jpeg")),
        ("images", ("b.jpg", photo_jpeg(6), "image/jpeg")),
    ]
    dino = list(models)[1]
    out = client.post("/v1/vision/encode", files=files, data={"model": dino})
    assert out.status_code == 200, out.text
    assert len(out.json()["embeddings"]) == 2 and out.json()["model"] == dino
    same = client.post("/v1/vision/encode", json={"images": [photo_b64(5)], "model": dino})
    np.testing.assert_allclose(out.json()["embeddings"][0], same.json()["embeddings"][0], atol=1e-6)


@pytest.mark.parametrize(
    ("images", "status", "code"),
    [
        (["!!!not base64!!!"], 422, "invalid_base64"),
        ([base64.b64encode(b"%PDF-1.4 hello").decode()], 415, "unsupported_format"),
        ([base64.b64encode(b"\xff\xd8\xff\xe0 truncated jpeg").decode()], 422, "corrupt"),
        ([{"path": "/etc/passwd"}], 403, "forbidden_path"),
        ([{"url": "http://127.0.0.1/x.jpg"}], 403, "forbidden_url"),
        ([{"data": "aGVsbG8=", "url": "http://x"}], 422, "invalid_input"),
        ([{}], 422, "invalid_input"),
        ([""], 422, "empty"),
    ],
)
def test_vision_encode_refusals(client: Client, images: list[Any], status: int, code: str) -> None:
    out = client.post("/v1/vision/encode", json={"images": images})
    assert out.status_code == status, out.text
    assert error_code(out) == code


def test_url_items_while_urls_are_off_are_403_forbidden_url_on_every_route(client: Client) -> None:
    """As the reference's Basics and error table say; the upload table once said 422."""
    client.post("/v1/collections", json={"name": "no-urls"})
    item = {"url": "https://images.example/x.jpg"}
    for path, body in (
        ("/v1/collections/no-urls/images", {"images": [item]}),
        ("/v1/vision/encode", {"images": [item]}),
        ("/v1/collections/no-urls/search", {"image": item}),
    ):
        out = client.post(path, json=body)
        assert (out.status_code, error_code(out)) == (403, "forbidden_url"), (path, out.text)
        # Syntax before policy: a URL that does not parse is 422 whether URLs are on or off.
        malformed = {"url": "http://a..b/x.jpg"}
        body = {"image": malformed} if "image" in body else {"images": [malformed]}
        out = client.post(path, json=body)
        assert (out.status_code, error_code(out)) == (422, "invalid_url"), (path, out.text)


@pytest.mark.parametrize(
    "body",
    [
        {"images": []},
        {"images": "abc"},
        {"image": ["abc"]},
        {"images": ["abc"], "normalize": "maybe"},
        {"images": [{"data": "x", "colour": "red"}]},
    ],
)
def test_vision_encode_malformed_bodies(client: Client, body: dict[str, Any]) -> None:
    out = client.post("/v1/vision/encode", json=body)
    assert out.status_code == 400 and error_code(out) == "invalid_request"


def test_vision_encode_body_format_errors(client: Client) -> None:
    assert client.post("/v1/vision/encode", content=b"{nope").status_code == 400
    plain = client.post("/v1/vision/encode", content=b"x", headers={"content-type": "text/plain"})
    assert plain.status_code == 415
    no_files = client.post("/v1/vision/encode", files=[("model", (None, "x"))])
    assert no_files.status_code == 400
    bad_flag = client.post(
        "/v1/vision/encode",
        files=[("images", ("a.jpg", photo_jpeg(1), "image/jpeg"))],
        data={"normalize": "perhaps"},
    )
    assert bad_flag.status_code == 400


def test_vision_encode_unknown_model(client: Client) -> None:
    out = client.post("/v1/vision/encode", json={"images": [photo_b64(1)], "model": "nope"})
    assert out.status_code == 404 and error_code(out) == "model_not_found"
    assert out.json()["details"] == {"model": "nope"}


def test_vision_similarity(client: Client) -> None:
    a, b = photo_b64(1), photo_b64(2)
    square = client.post("/v1/vision/similarity", json={"images": [a, b]}).json()
    scores = np.asarray(square["scores"])
    assert scores.shape == (2, 2)
    np.testing.assert_allclose(np.diag(scores), 1.0, atol=1e-5)
    cross = client.post("/v1/vision/similarity", json={"images": [a], "others": [a, b, b]})
    assert np.asarray(cross.json()["scores"]).shape == (1, 3)
    assert cross.json()["scores"][0][0] == pytest.approx(1.0, abs=1e-5)
    assert client.post("/v1/vision/similarity", json={"images": ["???"]}).status_code == 422
    nope = client.post("/v1/vision/similarity", json={"images": [a], "model": "nope"})
    assert nope.status_code == 404


def test_vision_batch_json_isolates_failures(client: Client) -> None:
    good = photo_b64(7)
    out = client.post("/v1/vision/batch", json={"images": [good, "garbage!", good, {"path": "x"}]})
    assert out.status_code == 200, out.text
    data = out.json()
    assert (data["count"], data["failed"]) == (2, 2)
    assert data["embeddings"][1] is None and data["embeddings"][3] is None
    assert [e["index"] for e in data["errors"]] == [1, 3]
    assert [e["code"] for e in data["errors"]] == ["invalid_base64", "forbidden_path"]
    np.testing.assert_allclose(data["embeddings"][0], data["embeddings"][2], atol=1e-6)


def test_vision_batch_multipart(client: Client) -> None:
    files = [("images", (f"{i}.jpg", photo_jpeg(i), "image/jpeg")) for i in range(5)]
    files.append(("images", ("bad.jpg", b"not an image", "image/jpeg")))
    out = client.post("/v1/vision/batch", files=files, data={"normalize": "false"})
    assert out.status_code == 200, out.text
    assert out.json()["count"] == 5 and out.json()["errors"][0]["index"] == 5
    assert client.post("/v1/vision/batch", json={"images": []}).status_code == 400


# -- multimodal --------------------------------------------------------------------------------


def test_multimodal_encode(client: Client, models: dict[str, Encoder]) -> None:
    out = client.post(
        "/v1/multimodal/encode", json={"images": [photo_b64(1)], "texts": ["a cat", "a dog"]}
    )
    assert out.status_code == 200, out.text
    data = out.json()
    assert len(data["image_embeddings"]) == 1 and len(data["text_embeddings"]) == 2
    texts_only = client.post("/v1/multimodal/encode", json={"texts": ["snow"]}).json()
    assert texts_only["image_embeddings"] == [] and len(texts_only["text_embeddings"]) == 1
    assert client.post("/v1/multimodal/encode", json={}).status_code == 422
    dino = list(models)[1]
    vision_only = client.post("/v1/multimodal/encode", json={"texts": ["x"], "model": dino})
    assert vision_only.status_code == 422 and error_code(vision_only) == "unsupported_operation"


def test_multimodal_match(client: Client, models: dict[str, Encoder]) -> None:
    out = client.post(
        "/v1/multimodal/match",
        json={"images": [photo_b64(1), photo_b64(2)], "texts": ["red", "blue", "green"]},
    )
    assert out.status_code == 200, out.text
    data = out.json()
    # The expectation, computed apart from the service: each input encoded on its own, numpy
    # cosine, and the checkpoint's own temperature; 2 images x 3 texts, so orientation matters.
    clip = models[data["model"]]
    assert isinstance(clip, HFEncoder) and clip.supports_text
    settings = state_of(client.app).settings.images
    images = [load_image(photo_jpeg(seed), settings).image for seed in (1, 2)]
    image_vectors = np.stack([clip.encode_images([image])[0] for image in images])
    text_vectors = np.stack([clip.encode_texts([t])[0] for t in ("red", "blue", "green")])
    scores = (image_vectors @ text_vectors.T).astype(np.float64)
    scale = float(torch.exp(cast(Any, clip.model).logit_scale.detach()).item())
    logits = scale * scores
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    assert data["logit_scale"] == pytest.approx(scale, rel=1e-6)
    np.testing.assert_allclose(np.asarray(data["scores"]), scores, atol=1e-5)
    np.testing.assert_allclose(np.asarray(data["probabilities"]), probabilities, atol=1e-5)
    dino = list(models)[1]
    refused = client.post(
        "/v1/multimodal/match", json={"images": [photo_b64(1)], "texts": ["x"], "model": dino}
    )
    assert refused.status_code == 422
    empty_text = client.post(
        "/v1/multimodal/match", json={"images": [photo_b64(1)], "texts": [" "]}
    )
    assert empty_text.status_code == 422


# -- collections -------------------------------------------------------------------------------


def test_collection_lifecycle(client: Client, models: dict[str, Encoder]) -> None:
    created = client.post("/v1/collections", json={"name": "life"})
    assert created.status_code == 201, created.text
    assert created.json()["models"] == list(models)  # every loaded model, like the CLI
    assert error_code(client.post("/v1/collections", json={"name": "life"})) == "collection_exists"
    names = [c["name"] for c in client.get("/v1/collections").json()["collections"]]
    assert "life" in names
    one = client.get("/v1/collections/life").json()
    assert one["image_count"] == 0 and one["indexes"][0]["vectors"] == 0
    assert client.delete("/v1/collections/life").status_code == 204
    assert error_code(client.get("/v1/collections/life")) == "collection_not_found"
    assert client.delete("/v1/collections/life").status_code == 404


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"name": "bad name!"}, 422),
        ({"name": "x", "models": ["not-loaded"]}, 404),
        ({"name": "x", "models": []}, 400),
        ({"name": ""}, 400),
        ({"name": "x", "index_factory": "NotAFactory"}, 422),
        ({"name": "x", "exact_max": -1}, 400),
        ({"name": "x", "extra": 1}, 400),
    ],
)
def test_collection_create_refusals(client: Client, body: dict[str, Any], status: int) -> None:
    assert client.post("/v1/collections", json=body).status_code == status


# -- images ------------------------------------------------------------------------------------


def test_image_read_patch_delete(client: Client, models: dict[str, Encoder]) -> None:
    # Its own collection: the module's shared 'photos' stays as seeded, whatever the test order.
    ids = add_photos(client, models, "edits")
    base = "/v1/collections/edits/images"
    first, last = ids[0], ids[-1]
    page = client.get(base, params={"limit": 4}).json()
    assert [i["id"] for i in page["images"]] == list(ids[:4]) and page["next_after"]
    rest = client.get(base, params={"after": page["next_after"]}).json()
    assert rest["next_after"] is None and [i["id"] for i in rest["images"]] == list(ids[4:])
    one = client.get(f"{base}/{first}").json()
    assert one["metadata"] == {"seed": 0, "even": True} and one["original_name"] == "p0.jpg"
    assert one["thumbnail_url"].endswith(f"/images/{first}/thumbnail")
    patched = client.patch(f"{base}/{first}", json={"metadata": {"tag": "x", "seed": 0}})
    assert patched.status_code == 200 and patched.json()["metadata"] == {"tag": "x", "seed": 0}
    assert client.get(f"{base}/{first}").json()["metadata"] == {"tag": "x", "seed": 0}
    assert client.delete(f"{base}/{last}").status_code == 204
    assert client.get(f"{base}/{last}").status_code == 404
    assert client.delete(f"{base}/{last}").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/v1/collections/photos/images/999999", None, 404),
        ("GET", "/v1/collections/nope/images/1", None, 404),
        ("GET", "/v1/collections/nope/images", None, 404),
        ("GET", "/v1/collections/photos/images/0", None, 400),
        ("GET", "/v1/collections/photos/images/99999999999999999999999", None, 400),
        ("GET", "/v1/collections/photos/images?limit=0", None, 400),
        ("PATCH", "/v1/collections/photos/images/999999", {"metadata": {}}, 404),
        ("PATCH", "/v1/collections/photos/images/1", {"metadata": []}, 400),
        ("PATCH", "/v1/collections/photos/images/1", {"meta": {}}, 400),
        ("DELETE", "/v1/collections/photos/images/999999", None, 404),
    ],
)
def test_image_errors(
    client: Client, seeded: tuple[int, ...], method: str, path: str, body: Any, status: int
) -> None:
    assert client.request(method, path, json=body).status_code == status


# -- search ------------------------------------------------------------------------------------


def test_search_by_image_text_id_and_vector(client: Client, seeded: tuple[int, ...]) -> None:
    by_image = client.post("/v1/collections/photos/search", json={"image": photo_b64(2), "k": 3})
    assert by_image.status_code == 200, by_image.text
    hits = by_image.json()["hits"]
    assert hits[0]["id"] == seeded[2] and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert hits[0]["thumbnail_url"].endswith("/thumbnail") and len(hits) == 3
    by_text = client.post("/v1/collections/photos/search", json={"text": "a red bicycle"}).json()
    assert len(by_text["hits"]) == len(seeded)
    similar = client.post(
        "/v1/collections/photos/search", json={"image_id": seeded[1], "k": 2}
    ).json()
    assert seeded[1] not in [h["id"] for h in similar["hits"]]
    fused = client.post(
        "/v1/collections/photos/search", json={"image_id": seeded[1], "fuse": True}
    ).json()
    assert fused["fused"] is True and "+" in fused["model"]
    vector = client.post("/v1/vision/encode", json={"images": [photo_b64(0)]}).json()["embeddings"][
        0
    ]
    by_vector = client.post("/v1/collections/photos/search", json={"vector": vector, "k": 1})
    assert by_vector.json()["hits"][0]["id"] == seeded[0]
    filtered = client.post(
        "/v1/collections/photos/search",
        json={"text": "x", "filter": {"metadata": {"even": True}}, "k": 10},
    ).json()
    assert filtered["hits"] and all(h["metadata"]["even"] is True for h in filtered["hits"])
    cut = client.post("/v1/collections/photos/search", json={"text": "x", "min_score": 1.0})
    assert cut.json()["hits"] == []
    via_multimodal = client.post(
        "/v1/multimodal/search", json={"collection": "photos", "text": "a red bicycle"}
    )
    assert via_multimodal.json()["hits"] == by_text["hits"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 422, "invalid_input"),
        ({"text": "a", "image_id": 1}, 422, "invalid_input"),
        ({"text": " "}, 422, "invalid_query"),
        ({"text": "a", "k": 0}, 400, "invalid_request"),
        ({"text": "a", "k": 5000}, 400, "invalid_request"),  # the schema says k <= MAX_K
        ({"text": "a", "offset": 9990, "k": 100}, 422, "invalid_query"),
        ({"text": "a", "min_score": 3}, 422, "invalid_query"),
        ({"text": "a", "fuse": True}, 422, "invalid_query"),
        ({"text": "a", "model": "nope"}, 422, "invalid_query"),
        ({"vector": [1.0, 2.0]}, 422, "invalid_query"),
        ({"vector": [0.0] * 24}, 422, "invalid_query"),
        ({"image_id": 999999}, 404, "image_not_found"),
        ({"image": "bad!"}, 422, "invalid_base64"),
        ({"text": "a", "filter": {"metadata": {"bad key!": 1}}}, 422, "invalid_query"),
        ({"text": "a", "filter": {"metadata": {"k": [1]}}}, 400, "invalid_request"),
        (
            {
                "text": "a",
                "filter": {
                    "created_after": "2030-01-01T00:00:00Z",
                    "created_before": "2020-01-01T00:00:00Z",
                },
            },
            422,
            "invalid_query",
        ),
    ],
)
def test_search_refusals(
    client: Client, seeded: tuple[int, ...], body: dict[str, Any], status: int, code: str
) -> None:
    out = client.post("/v1/collections/photos/search", json=body)
    assert out.status_code == status, out.text
    assert error_code(out) == code


def test_search_missing_collection(client: Client) -> None:
    for body in ({"text": "a"}, {"image": photo_b64(1)}, {"image_id": 1}, {"vector": [1.0]}):
        out = client.post("/v1/collections/nope/search", json=body)
        assert out.status_code == 404 and error_code(out) == "collection_not_found"
    assert client.post("/v1/multimodal/search", json={"text": "a"}).status_code == 400


# -- jobs --------------------------------------------------------------------------------------


def test_jobs(client: Client, seeded: tuple[int, ...]) -> None:
    state = state_of(client.app)
    catalog = state.search.catalog
    collection = catalog.get_collection("photos")
    # A live job holds its lease (a job nobody holds is reaped as interrupted when asked for).
    locks = JobLocks(state.store.locks_dir)
    job, lease, _ = open_job(catalog, locks, collection.id, kind="upload", source="4 uploads")
    try:
        catalog.record_job_progress(job.id, total=4, done=2)
        out = client.get(f"/v1/jobs/{job.id}").json()
        assert (out["collection"], out["state"], out["done"], out["progress"]) == (
            "photos",
            "pending",
            2,
            0.5,
        )
    finally:
        close_job(catalog, locks, lease, JobState.DONE)
    assert client.get(f"/v1/jobs/{job.id}").json()["state"] == "done"
    assert error_code(client.get("/v1/jobs/987654")) == "job_not_found"
    below_one = client.get("/v1/jobs/0")
    assert below_one.status_code == 400 and error_code(below_one) == "invalid_request"


def test_a_failed_job_shows_how_far_it_got(client: Client, seeded: tuple[int, ...]) -> None:
    """A failed (or cancelled) job's progress is the share it handled, never a full bar."""
    state = state_of(client.app)
    catalog = state.search.catalog
    collection = catalog.get_collection("photos")
    locks = JobLocks(state.store.locks_dir)
    seen: dict[tuple[str, int], float] = {}
    for end, (total, done) in (
        (JobState.FAILED, (4, 1)),
        (JobState.CANCELLED, (8, 6)),
        (JobState.FAILED, (0, 0)),  # failed before it counted anything
        (JobState.DONE, (0, 0)),  # nothing to do is all done
    ):
        job, lease, _ = open_job(catalog, locks, collection.id, kind="upload", source="x")
        catalog.record_job_progress(job.id, total=total, done=done)
        close_job(catalog, locks, lease, end, error="stopped" if end is JobState.FAILED else None)
        out = client.get(f"/v1/jobs/{job.id}").json()
        seen[(out["state"], total)] = out["progress"]
    assert seen == {
        ("failed", 4): 0.25,
        ("cancelled", 8): 0.75,
        ("failed", 0): 0.0,
        ("done", 0): 1.0,
    }


def test_cancelling_a_job(client: Client, seeded: tuple[int, ...]) -> None:
    """A job another process runs is cancelled through the catalog (it stops at its next
    progress write); an ended job cannot be, and cancelling twice answers the same."""
    state = state_of(client.app)
    catalog = state.search.catalog
    collection = catalog.get_collection("photos")
    locks = JobLocks(state.store.locks_dir)
    job, lease, _ = open_job(catalog, locks, collection.id, kind="upload", source="4 uploads")
    try:
        catalog.record_job_progress(job.id, total=4, done=1)
        out = client.post(f"/v1/jobs/{job.id}/cancel")
        assert out.status_code == 202, out.text
        assert (out.json()["state"], out.json()["done"]) == ("cancelled", 1)
        # What its runner sees on its next write: the job is cancelled.
        assert catalog.record_job_progress(job.id, done=1).state is JobState.CANCELLED
        again = client.post(f"/v1/jobs/{job.id}/cancel")
        assert (again.status_code, again.json()["state"]) == (202, "cancelled")
    finally:
        close_job(catalog, locks, lease, JobState.CANCELLED)
    finished, lease, _ = open_job(catalog, locks, collection.id, kind="upload", source="x")
    close_job(catalog, locks, lease, JobState.DONE)
    refused = client.post(f"/v1/jobs/{finished.id}/cancel")
    assert (refused.status_code, error_code(refused)) == (409, "job_finished"), refused.text
    assert client.get(f"/v1/jobs/{finished.id}").json()["state"] == "done"
    missing = client.post("/v1/jobs/987654/cancel")
    assert (missing.status_code, error_code(missing)) == (404, "job_not_found")


def test_a_job_id_that_is_not_a_number_is_400(client: Client) -> None:
    out = client.get("/v1/jobs/abc")
    assert out.status_code == 400 and error_code(out) == "invalid_request", out.text
    assert out.json()["detail"] == "'abc' in the path is not a whole number (an id is 1 or more)"


@pytest.mark.parametrize("value", ["abc", "1.5", "0x1", "1e3", "%20", "nan"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs/{}"),
        ("POST", "/v1/jobs/{}/cancel"),
        ("GET", "/v1/collections/photos/images/{}"),
        ("PATCH", "/v1/collections/photos/images/{}"),
        ("DELETE", "/v1/collections/photos/images/{}"),
        ("GET", "/v1/collections/photos/images/{}/file"),
        ("GET", "/v1/collections/photos/images/{}/thumbnail"),
    ],
)
def test_every_id_in_a_path_that_is_not_a_number_is_400(
    client: Client, method: str, path: str, value: str
) -> None:
    """As the reference says for each of them: a route that exists, with a bad id."""
    body: dict[str, object] | None = {"metadata": {}} if method == "PATCH" else None
    out = client.request(method, path.format(value), json=body)
    assert (out.status_code, error_code(out)) == (400, "invalid_request"), out.text


@pytest.mark.parametrize(
    "path", ["/v1/jobz/1", "/v1/collections/photos/images/1/original", "/v1/jobs/1/x"]
)
def test_a_path_no_route_has_is_still_404(client: Client, path: str) -> None:
    out = client.get(path)
    assert (out.status_code, error_code(out)) == (404, "not_found"), out.text


def test_json_body_is_capped_per_route(
    tmp_path: Path, cpu_settings: EncoderSettings, models: dict[str, Encoder]
) -> None:
    from vizdex.web.settings import LimitSettings

    settings = api_settings(
        tmp_path / "data",
        cpu_settings,
        limits=LimitSettings(json_bytes=4_000, upload_bytes=60_000),
    )
    big_json = {"images": [photo_b64(1, 320, 240)]}  # ~10 kB of base64
    with api_client(settings, models) as small:
        too_big = small.post("/v1/vision/encode", json=big_json)
        assert too_big.status_code == 413 and error_code(too_big) == "body_too_large"
        search_big = small.post("/v1/collections/x/search", json={"text": "a" * 5000})
        assert search_big.status_code == 413
        # The same image fits as an upload: uploads have their own, larger limit.
        files = [("images", ("a.jpg", photo_jpeg(1, 320, 240), "image/jpeg"))]
        assert small.post("/v1/vision/encode", files=files).status_code == 200
        huge = [("images", (f"{i}.jpg", photo_jpeg(i, 320, 240), "image/jpeg")) for i in range(9)]
        assert small.post("/v1/vision/encode", files=huge).status_code == 413


def test_image_byte_cap_is_413(
    tmp_path: Path, cpu_settings: EncoderSettings, models: dict[str, Encoder]
) -> None:
    from vizdex.imaging.settings import ImageInputSettings

    settings = api_settings(
        tmp_path / "data", cpu_settings, images=ImageInputSettings(max_bytes=1_000)
    )
    with api_client(settings, models) as small:
        out = small.post("/v1/vision/encode", json={"images": [photo_b64(1)]})
        assert out.status_code == 413 and error_code(out) == "too_large"
        files = [("images", ("a.jpg", photo_jpeg(1), "image/jpeg"))]
        assert small.post("/v1/vision/encode", files=files).status_code == 413


def test_files_of_images_without_stored_bytes_are_404(
    client: Client, seeded: tuple[int, ...]
) -> None:
    # Seeded straight into the catalog: no original was kept, so neither file nor thumbnail.
    image_id = seeded[0]
    for what in ("file", "thumbnail"):
        out = client.get(f"/v1/collections/photos/images/{image_id}/{what}")
        assert out.status_code == 404 and error_code(out) == "file_missing"


def test_absurd_nesting_is_a_client_error(client: Client, seeded: tuple[int, ...]) -> None:
    deep = b'{"metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    json_headers = {"content-type": "application/json"}
    image = f"/v1/collections/photos/images/{seeded[0]}"
    for method, path in [
        ("PATCH", image),
        ("POST", "/v1/collections/photos/search"),
        ("POST", "/v1/collections/photos/images"),
        ("POST", "/v1/vision/encode"),
    ]:
        out = client.request(method, path, content=deep, headers=json_headers)
        assert out.status_code == 400, (method, path, out.text)
    nested: Any = "leaf"
    for _ in range(12):
        nested = {"n": nested}
    too_deep = client.patch(image, json={"metadata": nested})
    assert too_deep.status_code == 422 and "nest" in too_deep.json()["detail"]


def test_bodies_that_are_not_utf8_are_client_errors(client: Client) -> None:
    bad_json = b'{"images": ["\xff\xfe"], "text": "\xff"}'
    json_headers = {"content-type": "application/json"}
    for path in ("/v1/vision/encode", "/v1/vision/batch", "/v1/collections/photos/search"):
        assert client.post(path, content=bad_json, headers=json_headers).status_code == 400
    form = (
        b'--XX\r\nContent-Disposition: form-data; name="model"\r\n\r\n\xff\xfe\r\n'
        b'--XX\r\nContent-Disposition: form-data; name="images"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + photo_jpeg(1) + b"\r\n--XX--\r\n"
    )
    multipart = {"content-type": "multipart/form-data; boundary=XX"}
    for path in ("/v1/vision/encode", "/v1/vision/batch", "/v1/collections/photos/images"):
        out = client.post(path, content=form, headers=multipart)
        assert out.status_code == 400, (path, out.text)
        broken = client.post(path, content=b"garbage", headers=multipart)
        assert broken.status_code == 400
