"""Changing a collection's models while it serves, through HTTP (tiny random CLIP and DINOv3,
real SQLite and FAISS): add a model (back-fill job), see coverage and state, switch the default
atomically, remove a model; and queries naming a model the server has not loaded answer 409.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from tests.support.api_helpers import (
    api_client,
    api_settings,
    photo_b64,
    state_of,
    upload_photos,
)
from vizdex.core.errors import UnavailableError
from vizdex.core.kinds import ModelKind
from vizdex.encoders.base import Encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.indexer import ModelChanges
from vizdex.search import ModelNotLoadedError, ModelUse, choose_model
from vizdex.web.settings import ServiceSettings

Client = TestClient[Litestar]


def _settings(root: Path, cpu_settings: EncoderSettings, models: list[str]) -> ServiceSettings:
    settings = api_settings(root, replace(cpu_settings, models=tuple(models)))
    indexer = replace(settings.indexer, gc_interval_s=0.0, backfill_share=1.0, batch_size=2)
    return replace(settings, indexer=indexer)


@pytest.fixture
def both(clip_encoder: Encoder, dino_encoder: Encoder) -> dict[str, Encoder]:
    return {clip_encoder.name: clip_encoder, dino_encoder.name: dino_encoder}


@pytest.fixture
def client(
    tmp_path: Path, cpu_settings: EncoderSettings, both: dict[str, Encoder]
) -> Iterator[Client]:
    with api_client(_settings(tmp_path / "data", cpu_settings, list(both)), both) as c:
        yield c


def _wait_job(client: Client, url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(url).json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {url} did not finish")


def _image_search(client: Client, collection: str, seed: int, **extra: Any) -> Any:
    return client.post(
        f"/v1/collections/{collection}/search", json={"image": photo_b64(seed), "k": 3, **extra}
    )


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def test_add_a_model_backfill_switch_the_default_and_remove_the_old_one(
    client: Client, clip_encoder: Encoder, dino_encoder: Encoder
) -> None:
    clip, dino = clip_encoder.name, dino_encoder.name
    state = state_of(client.app)
    assert client.post("/v1/collections", json={"name": "c", "models": [clip]}).status_code == 201
    assert (
        client.post("/v1/collections", json={"name": "ref", "models": [clip, dino]}).status_code
        == 201
    )
    ids = upload_photos(client, "c", [0, 1, 2, 3, 4])
    reference = upload_photos(client, "ref", [0, 1, 2, 3, 4])  # the same images, ingested with both
    before = client.get("/v1/collections/c").json()
    assert (before["text_model"], before["image_model"]) == (clip, clip)

    # The model as it is while its back-fill runs: in the collection, not yet answering.
    record = state.search.get_collection("c")
    state.search.catalog.add_model(record.id, dino)
    half = client.get("/v1/collections/c").json()
    assert half["states"] == {clip: "ready", dino: "backfilling"}
    assert [(m["model"], m["state"], m["vectors"]) for m in half["model_states"]] == [
        (clip, "ready", 5),
        (dino, "backfilling", 0),
    ]
    refused = _image_search(client, "c", 1, model=dino)
    assert refused.status_code == 409 and refused.json()["code"] == "model_not_ready"
    early = client.patch("/v1/collections/c", json={"image_model": dino})
    assert early.status_code == 409 and early.json()["code"] == "model_not_ready"
    # Image queries naming no model keep using CLIP meanwhile.
    assert _image_search(client, "c", 1).json()["model"] == clip
    # A new image meanwhile gets its DINOv3 vector at once (the ingest knows the model now).
    ids += upload_photos(client, "c", [5])

    answer = client.post("/v1/collections/c/models", json={"model": dino})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert answer.headers["location"] == body["job_url"]
    job = _wait_job(client, body["job_url"])
    assert job["state"] == "done" and job["kind"] == "backfill", job
    assert (job["total"], job["done"], job["failed"]) == (5, 5, 0)

    ready = client.get("/v1/collections/c").json()
    assert ready["states"] == {clip: "ready", dino: "ready"}
    assert ready["precisions"][dino] == ["float32"]  # recorded by the back-fill
    assert [(m["model"], m["vectors"], m["coverage"]) for m in ready["model_states"]] == [
        (clip, 6, 1.0),
        (dino, 6, 1.0),
    ]
    # Back-filled vectors equal what an ingest with both models computed.
    catalog = state.search.catalog
    _, filled = catalog.get_vectors(record.id, dino, ids[:5])
    _, ingested = catalog.get_vectors(state.search.get_collection("ref").id, dino, reference)
    assert _cosine(filled, ingested).min() >= 0.9999

    # The switch: image queries use DINOv3 from this answer on; text stays with CLIP.
    assert _image_search(client, "c", 2).json()["model"] == clip
    switched = client.patch("/v1/collections/c", json={"image_model": dino})
    assert switched.status_code == 200, switched.text
    assert (switched.json()["text_model"], switched.json()["image_model"]) == (clip, dino)
    found = _image_search(client, "c", 2).json()
    assert found["model"] == dino and found["hits"][0]["id"] == ids[2]
    vision_only = client.patch("/v1/collections/c", json={"text_model": dino})
    assert vision_only.status_code == 422
    assert vision_only.json()["code"] == "unsupported_operation"

    # Removing: not a default, not the only model.
    in_use = client.delete("/v1/collections/c/models", params={"model": dino})
    assert in_use.status_code == 409 and in_use.json()["code"] == "model_in_use"
    assert client.patch("/v1/collections/c", json={"image_model": clip}).status_code == 200
    index_file = state.search.indexes.path_for(record.id, dino)
    state.search.indexes.snapshot(state.search.get_collection("c"))
    assert index_file.is_file()
    removed = client.delete("/v1/collections/c/models", params={"model": dino})
    assert removed.status_code == 200, removed.text
    assert removed.json()["models"] == [clip] and not index_file.exists()
    assert catalog.model_coverage(record.id) == {clip: 6}
    gone = _image_search(client, "c", 2, model=dino)
    assert gone.status_code == 422 and gone.json()["code"] == "invalid_query"
    last = client.delete("/v1/collections/c/models", params={"model": clip})
    assert last.status_code == 409 and last.json()["code"] == "model_in_use"
    assert client.post("/v1/collections/c/models", json={"model": "not-loaded"}).status_code == 409


def test_adding_a_model_to_an_empty_collection_makes_it_ready_at_once(
    client: Client, clip_encoder: Encoder, dino_encoder: Encoder
) -> None:
    assert (
        client.post(
            "/v1/collections", json={"name": "e", "models": [clip_encoder.name]}
        ).status_code
        == 201
    )
    answer = client.post("/v1/collections/e/models", json={"model": dino_encoder.name})
    assert answer.status_code == 202
    assert answer.json()["collection"]["states"][dino_encoder.name] == "ready"
    assert _wait_job(client, answer.json()["job_url"])["state"] == "done"
    switched = client.patch("/v1/collections/e", json={"image_model": dino_encoder.name})
    assert switched.status_code == 200


def test_an_image_query_needing_a_model_this_server_has_not_loaded_is_409_not_a_fallback(
    tmp_path: Path,
    cpu_settings: EncoderSettings,
    both: dict[str, Encoder],
    clip_encoder: Encoder,
    dino_encoder: Encoder,
) -> None:
    root = tmp_path / "data"
    clip, dino = clip_encoder.name, dino_encoder.name
    with api_client(_settings(root, cpu_settings, list(both)), both) as full:
        assert full.post("/v1/collections", json={"name": "new"}).status_code == 201
        assert full.post("/v1/collections", json={"name": "old"}).status_code == 201
        upload_photos(full, "new", [0, 1])
        upload_photos(full, "old", [0, 1])
        # "old": as a collection from before stored defaults (0004) looks.
        state = state_of(full.app)
        state.search.catalog.set_default_models(
            state.search.get_collection("old").id, text_model=None, image_model=None
        )
    only_clip = {clip: clip_encoder}
    with api_client(_settings(root, cpu_settings, [clip]), only_clip) as client:
        for name in ("new", "old"):
            answer = _image_search(client, name, 0)
            assert answer.status_code == 409, answer.text
            body = answer.json()
            assert body["code"] == "model_not_loaded" and body["details"]["model"] == dino
        # Naming a loaded model, or a text query, still works; so does a stored image's vector.
        assert _image_search(client, "old", 0, model=clip).json()["model"] == clip
        text = client.post("/v1/collections/old/search", json={"text": "a photo", "k": 2})
        assert text.status_code == 200 and text.json()["model"] == clip


@pytest.mark.parametrize(
    ("models", "chosen"),
    [
        (["clip", "dino-unloaded"], None),  # the unloaded one may be the vision model
        (["dino-unloaded", "dino"], None),  # either could be the vision model asked for
        (["unloaded", "clip"], "unloaded"),  # every possible answer is the same model
        (["clip", "dino"], "dino"),
        (["clip", "other-clip"], "clip"),
    ],
)
def test_image_model_choice_refuses_to_guess_past_a_model_it_cannot_see(
    models: list[str], chosen: str | None
) -> None:
    kinds = {"clip": ModelKind.MULTIMODAL, "other-clip": ModelKind.MULTIMODAL}
    kinds["dino"] = ModelKind.VISION
    if chosen is None:
        with pytest.raises(ModelNotLoadedError) as refused:
            choose_model(models, kinds.get, ModelUse.IMAGE)
        assert refused.value.details["model"].endswith("unloaded")
    else:
        assert choose_model(models, kinds.get, ModelUse.IMAGE) == chosen


def test_a_ray_backfill_without_ray_is_refused_before_anything_changes(
    client: Client, clip_encoder: Encoder, dino_encoder: Encoder
) -> None:
    if importlib.util.find_spec("ray") is not None:
        pytest.skip("ray is installed here: tests/integration/test_ray.py covers it")
    state = state_of(client.app)
    assert (
        client.post(
            "/v1/collections", json={"name": "r", "models": [clip_encoder.name]}
        ).status_code
        == 201
    )
    upload_photos(client, "r", [1])
    changes = ModelChanges(state.search, state.indexer)
    with pytest.raises(UnavailableError) as refused:
        changes.add_model("r", dino_encoder.name, ray_address="auto")
    assert refused.value.code == "ray_unavailable"
    assert state.search.get_collection("r").models == (clip_encoder.name,)


def test_the_model_the_rule_picks_cannot_be_removed_and_shows_as_the_default(
    client: Client, clip_encoder: Encoder, dino_encoder: Encoder
) -> None:
    """With the defaults unset (PATCH null), the model rule answers: CLIP for text. Removing it
    was a 200 that dropped every CLIP vector and left no text search; GET showed default_for []
    for the model answering every query."""
    clip, dino = clip_encoder.name, dino_encoder.name
    made = client.post("/v1/collections", json={"name": "r", "models": [clip, dino]})
    assert made.status_code == 201, made.text
    upload_photos(client, "r", [0, 1])
    unset = client.patch("/v1/collections/r", json={"text_model": None, "image_model": None})
    assert unset.status_code == 200 and unset.json()["text_model"] is None, unset.text
    shown = client.get("/v1/collections/r").json()
    assert {m["model"]: m["default_for"] for m in shown["model_states"]} == {
        clip: ["text"],
        dino: ["image"],  # the rule prefers the vision model for image queries
    }
    for model, use in ((clip, "text"), (dino, "image")):
        refused = client.delete("/v1/collections/r/models", params={"model": model})
        assert refused.status_code == 409, refused.text
        body = refused.json()
        assert body["code"] == "model_in_use" and f"answers the {use} queries" in body["detail"]
    state = state_of(client.app)
    assert state.search.catalog.model_coverage(state.search.get_collection("r").id) == {
        clip: 2,
        dino: 2,
    }
    text = client.post("/v1/collections/r/search", json={"text": "a photo", "k": 1})
    assert text.status_code == 200 and text.json()["model"] == clip
    # Once the rule picks another model, the first one can go.
    assert client.patch("/v1/collections/r", json={"image_model": clip}).status_code == 200
    assert client.delete("/v1/collections/r/models", params={"model": dino}).status_code == 200
