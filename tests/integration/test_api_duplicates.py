"""``POST /v1/collections/{name}/duplicates`` and its job, on the tiny models and real photos.

The photos are the near-copy set of ``tests/support/near_copies.py`` (re-saved, resized, cropped,
brightened and mirrored copies of a few bases, and look-alikes sharing each base's palette),
uploaded and embedded by the real pipeline. The groups the API serves must be exactly those the
stored vectors imply at the threshold (an independent brute-force oracle). What the *tiny random*
models can tell apart is narrower than what real DINOv3 can (README, "Near-duplicates"): their
re-saved and half-size copies score at least 0.92 with the original, their distinct photos mostly
below 0.88, but a random network has no notion that a mirrored or cropped photo is the same
picture. So the checks of meaning here are the ones these models support: re-saves and resizes
join their original's group, a palette look-alike never joins its base's.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from tests.integration.test_duplicates import oracle
from tests.support.api_helpers import api_client, api_settings, photo_b64, state_of, wait_until
from tests.support.near_copies import NearCopy, near_copy_set
from vizdex.encoders.base import Encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.indexer import JobLocks
from vizdex.indexer.jobs import DUPLICATES_INTERRUPTED
from vizdex.search import DUPLICATE_THRESHOLD
from vizdex.web.settings import AuthSettings, LimitSettings

Client = TestClient[Litestar]
READER = "dup-read-key"


@pytest.fixture(scope="module")
def models(clip_encoder: Encoder, dino_encoder: Encoder) -> dict[str, Encoder]:
    return {clip_encoder.name: clip_encoder, dino_encoder.name: dino_encoder}


@pytest.fixture(scope="module")
def photos() -> list[NearCopy]:
    return near_copy_set(4)


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory,
    cpu_settings: EncoderSettings,
    models: dict[str, Encoder],
    photos: list[NearCopy],
) -> Iterator[Client]:
    settings = api_settings(tmp_path_factory.mktemp("dups") / "data", cpu_settings)
    with api_client(settings, models) as test_client:
        assert test_client.post("/v1/collections", json={"name": "near"}).status_code == 201
        for start in range(0, len(photos), 8):
            part = photos[start : start + 8]
            items = [
                {"data": base64.b64encode(p.data).decode(), "name": p.name, "metadata": meta(p)}
                for p in part
            ]
            answer = test_client.post("/v1/collections/near/images", json={"images": items})
            assert answer.status_code == 201, answer.text
        yield test_client


def meta(photo: NearCopy) -> dict[str, Any]:
    return {"set": photo.name.split("-")[0]}


def by_name(client: Client) -> dict[int, str]:
    images = client.get("/v1/collections/near/images", params={"limit": 1000}).json()["images"]
    return {image["id"]: image["original_name"] for image in images}


def named_groups(body: dict[str, Any], names: dict[int, str]) -> set[frozenset[str]]:
    return {frozenset(names[image["id"]] for image in group["images"]) for group in body["groups"]}


def vectors_of(client: Client, model: str) -> tuple[list[int], np.ndarray]:
    search = state_of(client.app).search
    record = search.get_collection("near")
    ids = sorted(by_name(client))
    found, vectors = search.catalog.get_vectors(record.id, model, ids)
    return found.tolist(), vectors


def test_groups_are_what_the_stored_vectors_say_and_dinov3_answers(
    client: Client, dino_encoder: Encoder, photos: list[NearCopy]
) -> None:
    answer = client.post("/v1/collections/near/duplicates", json={})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == dino_encoder.name  # the vision-only model by default
    assert body["threshold"] == DUPLICATE_THRESHOLD and body["prefer"] == "pixels"
    assert body["scanned"] == len(photos) and body["from_job"] is None
    assert body["approximate"] is False and body["next_offset"] is None
    names = by_name(client)
    ids, vectors = vectors_of(client, dino_encoder.name)
    expected = oracle(ids, vectors, DUPLICATE_THRESHOLD)
    assert {frozenset(g["images"][i]["id"] for i in range(g["size"])) for g in body["groups"]} == (
        expected
    )
    assert body["total_groups"] == len(expected)
    groups = named_groups(body, names)
    for base in {p.group for p in photos if p.group}:
        home = next(group for group in groups if f"{base}-original.jpg" in group)
        assert {f"{base}-q60.jpg", f"{base}-q35.jpg", f"{base}-half.jpg"} <= home
        assert f"{base}-palette.jpg" not in home


def test_each_group_says_who_to_keep_and_why(client: Client) -> None:
    body = client.post("/v1/collections/near/duplicates", json={"limit": 100}).json()
    assert body["groups"], "the near-copy set has groups"
    for group in body["groups"]:
        images = group["images"]
        keeper = images[0]
        assert keeper["keeper"] and keeper["id"] == group["keeper_id"]
        assert sum(image["keeper"] for image in images) == 1
        assert sum(image["representative"] for image in images) == 1
        pixels = [(i["width"] * i["height"], i["byte_size"]) for i in images]
        assert (keeper["width"] * keeper["height"], keeper["byte_size"]) == max(pixels)
        for image in images:
            assert -1.0 <= image["similarity"] <= 1.0
            assert image["thumbnail_url"].endswith(f"/images/{image['id']}/thumbnail")
            assert {"format", "created_at", "metadata", "original_name"} <= set(image)
        assert group["size"] == len(images) and len(group["key"]) == 16
    smallest = client.post("/v1/collections/near/duplicates", json={"prefer": "file_size"}).json()
    for group in smallest["groups"]:
        sizes = [image["byte_size"] for image in group["images"]]
        assert group["images"][0]["byte_size"] == max(sizes)


def test_pages_of_groups(client: Client) -> None:
    whole = client.post("/v1/collections/near/duplicates", json={}).json()
    total = whole["total_groups"]
    assert total >= 2
    first = client.post("/v1/collections/near/duplicates", json={"limit": 1}).json()
    second = client.post("/v1/collections/near/duplicates", json={"limit": 1, "offset": 1}).json()
    assert [g["key"] for g in first["groups"] + second["groups"]] == [
        g["key"] for g in whole["groups"][:2]
    ]
    assert first["next_offset"] == 1 and first["total_groups"] == total


def test_a_filter_groups_only_matching_images(client: Client) -> None:
    body = client.post(
        "/v1/collections/near/duplicates",
        json={"threshold": 0.5, "filter": {"metadata": {"set": "base0"}}},
    ).json()
    names = by_name(client)
    assert body["scanned"] == 8
    for group in named_groups(body, names):
        assert all(name.startswith("base0-") for name in group)


@pytest.mark.parametrize("threshold", [1.5, -1.01, 2])
def test_a_threshold_outside_minus_one_to_one_is_a_422_with_the_reason(
    client: Client, threshold: float
) -> None:
    answer = client.post("/v1/collections/near/duplicates", json={"threshold": threshold})
    assert answer.status_code == 422
    body = answer.json()
    assert body["code"] == "invalid_query"
    assert "threshold must be a cosine similarity between -1 and 1" in body["detail"]


def test_bad_requests(client: Client, clip_encoder: Encoder) -> None:
    url = "/v1/collections/near/duplicates"
    answer = client.post(url, json={"model": "not-a-model"})
    assert (answer.status_code, answer.json()["code"]) == (422, "invalid_query")
    answer = client.post("/v1/collections/nowhere/duplicates", json={})
    assert (answer.status_code, answer.json()["code"]) == (404, "collection_not_found")
    answer = client.post(url, json={"prefer": "prettiest"})
    assert answer.status_code == 400
    answer = client.post(url, json={"limit": 0})
    assert answer.status_code == 400
    answer = client.post(url, json={"threshold": "high"})
    assert answer.status_code == 400
    dates = {"created_after": "2030-01-01T00:00:00Z", "created_before": "2020-01-01T00:00:00Z"}
    answer = client.post(url, json={"filter": dates})
    assert (answer.status_code, answer.json()["code"]) == (422, "invalid_query")
    clip = client.post(url, json={"model": clip_encoder.name}).json()
    assert clip["model"] == clip_encoder.name


def test_empty_and_single_image_collections_have_no_groups(client: Client) -> None:
    assert client.post("/v1/collections", json={"name": "empty"}).status_code == 201
    body = client.post("/v1/collections/empty/duplicates", json={"threshold": -1}).json()
    assert body["groups"] == [] and body["total_groups"] == 0 and body["scanned"] == 0
    assert client.post("/v1/collections", json={"name": "single"}).status_code == 201
    upload = {"images": [{"data": photo_b64(3)}]}
    assert client.post("/v1/collections/single/images", json=upload).status_code == 201
    body = client.post("/v1/collections/single/duplicates", json={"threshold": -1}).json()
    assert body["groups"] == [] and body["scanned"] == 1


@pytest.fixture(scope="module")
def job_client(
    tmp_path_factory: pytest.TempPathFactory,
    cpu_settings: EncoderSettings,
    models: dict[str, Encoder],
    photos: list[NearCopy],
) -> Iterator[Client]:
    """Every scan is a job here (no collection is small enough), and a read-only key exists."""
    settings = api_settings(
        tmp_path_factory.mktemp("dup-jobs") / "data",
        cpu_settings,
        limits=LimitSettings(duplicates_sync_images=0),
        auth=AuthSettings(admin_keys=("dup-admin",), read_keys=(READER,)),
    )
    with api_client(settings, models, **{"X-API-Key": "dup-admin"}) as test_client:
        assert test_client.post("/v1/collections", json={"name": "near"}).status_code == 201
        items = [{"data": base64.b64encode(p.data).decode(), "name": p.name} for p in photos[:16]]
        answer = test_client.post("/v1/collections/near/images", json={"images": items})
        assert answer.status_code in (201, 202), answer.text
        if answer.status_code == 202:
            wait_job(test_client, answer.json()["job_url"])
        yield test_client


def wait_job(client: Client, url: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def finished() -> bool:
        seen.update(client.get(url).json())
        return seen["state"] in ("done", "failed", "cancelled")

    wait_until(finished, timeout=120, what=f"job {url}")
    return seen


def test_a_large_collection_is_scanned_as_a_job(job_client: Client) -> None:
    reader = {"X-API-Key": READER}  # a read-only key may ask: nothing is changed
    answer = job_client.post(
        "/v1/collections/near/duplicates", json={"threshold": 0.5}, headers=reader
    )
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert answer.headers["location"] == accepted["job_url"] == f"/v1/jobs/{accepted['job_id']}"
    job = wait_job(job_client, accepted["job_url"])
    assert (job["kind"], job["state"], job["progress"]) == ("duplicates", "done", 1.0)
    assert job["total"] == job["done"] == 16
    assert job["source"] == "duplicates, threshold 0.5"
    result_url = accepted["result_url"]
    assert result_url == f"/v1/collections/near/duplicates/{accepted['job_id']}"
    body = job_client.get(result_url, headers=reader).json()
    assert body["from_job"] == accepted["job_id"] and body["threshold"] == 0.5
    assert body["total_groups"] >= 1 and body["scanned"] == 16
    page = job_client.get(result_url, params={"limit": 1, "prefer": "oldest"}).json()
    assert [g["key"] for g in page["groups"]] == [body["groups"][0]["key"]]
    assert page["prefer"] == "oldest"
    ids, vectors = vectors_of(job_client, body["model"])
    assert {frozenset(i["id"] for i in g["images"]) for g in body["groups"]} == oracle(
        ids, vectors, 0.5
    )


def test_job_results_belong_to_their_collection_and_kind(job_client: Client) -> None:
    upload_job = job_client.get("/v1/jobs/1").json()
    assert upload_job["kind"] == "upload"
    answer = job_client.get("/v1/collections/near/duplicates/1")
    assert (answer.status_code, answer.json()["code"]) == (404, "job_not_found")
    answer = job_client.get("/v1/collections/near/duplicates/999999")
    assert (answer.status_code, answer.json()["code"]) == (404, "job_not_found")
    scan = job_client.post("/v1/collections/near/duplicates", json={}).json()
    wait_job(job_client, scan["job_url"])
    assert job_client.post("/v1/collections", json={"name": "other"}).status_code == 201
    answer = job_client.get(f"/v1/collections/other/duplicates/{scan['job_id']}")
    assert (answer.status_code, answer.json()["code"]) == (404, "job_not_found")


def test_a_scan_still_running_or_interrupted_has_no_result(job_client: Client) -> None:
    state = state_of(job_client.app)
    catalog = state.search.catalog
    record = catalog.get_collection("near")
    pending = catalog.create_job(record.id, kind="duplicates", source="duplicates, by hand")
    lease = JobLocks(state.store.locks_dir).hold(pending.id)  # "running" in a live process
    answer = job_client.get(f"/v1/collections/near/duplicates/{pending.id}")
    assert (answer.status_code, answer.json()["code"]) == (409, "job_not_finished")
    assert f"/v1/jobs/{pending.id}" in answer.json()["detail"]
    lease.release()  # as when that process dies: the job is failed the next time it is read
    job = job_client.get(f"/v1/jobs/{pending.id}").json()
    assert (job["state"], job["error"]) == ("failed", DUPLICATES_INTERRUPTED)
    answer = job_client.get(f"/v1/collections/near/duplicates/{pending.id}")
    assert (answer.status_code, answer.json()["code"]) == (409, "job_failed")
    assert "ask for the duplicates again" in answer.json()["detail"]


def test_a_collection_deleted_while_its_scan_waits_ends_the_scan_quietly(
    job_client: Client, photos: list[NearCopy], caplog: pytest.LogCaptureFixture
) -> None:
    """Deleting a collection deletes its jobs; the scan that then runs (or finishes) has no job
    row left to close. That is the user's doing, not a fault: no ERROR with a traceback."""
    caplog.set_level(logging.INFO, logger="vizdex.indexer.duplicate_jobs")
    assert job_client.post("/v1/collections", json={"name": "gone"}).status_code == 201
    item = {"data": base64.b64encode(photos[0].data).decode(), "name": photos[0].name}
    added = job_client.post("/v1/collections/gone/images", json={"images": [item]})
    assert added.status_code in (201, 202), added.text
    if added.status_code == 202:
        wait_job(job_client, added.json()["job_url"])
    jobs = state_of(job_client.app).duplicate_jobs
    gate = threading.Event()
    busy = jobs._executor.submit(gate.wait)  # the scan thread is busy: the next scan waits
    try:
        answer = job_client.post("/v1/collections/gone/duplicates", json={})
        assert answer.status_code == 202, answer.text
        assert job_client.delete("/v1/collections/gone").status_code == 204
    finally:
        gate.set()
    busy.result(timeout=30)
    jobs._executor.submit(lambda: None).result(timeout=60)  # the deleted one's scan has run
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    job = job_client.get(answer.json()["job_url"])
    assert (job.status_code, job.json()["code"]) == (404, "job_not_found")
