"""Near-copy groups equal the known sets, on a tiny DINOv3 trained to see copies as one picture.

The tiny *random* models of the other duplicate tests cannot tell a 10 %-cropped, brightened or
mirrored photo from a different one, so there only re-saves and resizes are held to their group.
The checkpoint here (``tests/support/models/near-copy-dinov3``) was trained for that invariance
by ``tests/support/train_near_copy_dino.py`` (command, seed and figures in its docstring and the
README's "Near-duplicates") on other photos: training seeds start at 1,000,000, the sets here are
drawn from seeds below 100,000, so every picture is one the model never saw. The service loads it
itself from ``VIZDEX_MODELS``, ingests each set over the API and groups it through
``POST /v1/collections/{name}/duplicates`` (and one set through ``vizdex ingest`` and
``vizdex duplicates``): for every seed the groups must *be* the known sets -
each base's seven copies together, each palette look-alike alone - and each group's keeper the one
the ``prefer`` rule names.

The threshold is passed explicitly: ``NEAR_COPY_THRESHOLD`` (0.75), chosen for this small model on
its own check sets (not these). Its 10 %-cropped copies score 0.85 and up with their nearest
copy - below the documented default 0.9 for one crop of seed 7,000 here (0.852), and in 5 of the
40 check sets - while no two different pictures in these sets score above 0.53.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from tests.support.api_helpers import api_client, api_settings
from tests.support.near_copies import NearCopy, expected_groups, near_copy_set, write_set
from tests.support.train_near_copy_dino import MODEL_DIR, NEAR_COPY_THRESHOLD, TRAIN_SEED
from vizdex.cli.main import main
from vizdex.encoders.settings import EncoderSettings

Client = TestClient[Litestar]
# Chosen before the model was trained; each set: four bases, seven copies and a look-alike each.
SEEDS = (500, 7_000, 42_000, 90_000)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    env = {"VIZDEX_MODELS": str(MODEL_DIR), "VIZDEX_DEVICE": "cpu", "VIZDEX_DTYPE": "float32"}
    settings = api_settings(
        tmp_path_factory.mktemp("trained") / "data", EncoderSettings.from_env(env)
    )
    with api_client(settings, None) as test_client:  # None: the app loads VIZDEX_MODELS itself
        yield test_client


def ingest(client: Client, collection: str, photos: list[NearCopy]) -> dict[int, str]:
    """Upload ``photos`` into a new collection; returns image id -> file name."""
    assert client.post("/v1/collections", json={"name": collection}).status_code == 201
    for start in range(0, len(photos), 8):
        items = [
            {"data": base64.b64encode(photo.data).decode(), "name": photo.name}
            for photo in photos[start : start + 8]
        ]
        answer = client.post(f"/v1/collections/{collection}/images", json={"images": items})
        assert answer.status_code == 201, answer.text
    listed = client.get(f"/v1/collections/{collection}/images", params={"limit": 1000}).json()
    return {image["id"]: image["original_name"] for image in listed["images"]}


def keeper_key(prefer: str, image: dict[str, Any]) -> tuple[float, ...]:
    """The README's keeper rules; ties end with the smaller id."""
    pixels, size = image["width"] * image["height"], image["byte_size"]
    added = datetime.fromisoformat(image["created_at"]).timestamp()
    if prefer == "file_size":
        return (-size, -pixels, added, image["id"])
    return (-pixels, -size, added, image["id"])


def test_the_photo_sets_are_held_out_from_training() -> None:
    for seed in SEEDS:  # near_copy_set draws bases from seed + i, look-alikes from seed + 1000 + i
        assert seed + 1000 + 4 < TRAIN_SEED


@pytest.mark.parametrize("seed", SEEDS)
def test_groups_are_the_known_near_copy_sets(client: Client, seed: int) -> None:
    photos = near_copy_set(4, seed=seed)
    names = ingest(client, f"near-{seed}", photos)
    assert len(names) == len(photos)  # every edit is a different file: none deduplicated
    for prefer in ("pixels", "file_size"):
        request = {"threshold": NEAR_COPY_THRESHOLD, "prefer": prefer}
        answer = client.post(f"/v1/collections/near-{seed}/duplicates", json=request)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["threshold"] == NEAR_COPY_THRESHOLD and body["model"] == str(MODEL_DIR)
        assert body["scanned"] == len(photos) and body["next_offset"] is None
        groups = {frozenset(names[image["id"]] for image in g["images"]) for g in body["groups"]}
        assert groups == expected_groups(photos)
        for group in body["groups"]:
            keeper = min(group["images"], key=lambda image: keeper_key(prefer, image))
            assert group["keeper_id"] == keeper["id"] == group["images"][0]["id"]
            assert [image["keeper"] for image in group["images"]] == [True] + [False] * 6
        if prefer == "pixels":  # full size, and the best JPEG of those: the original
            kept = {names[group["keeper_id"]] for group in body["groups"]}
            assert kept == {f"base{i}-original.jpg" for i in range(4)}


def test_the_cli_finds_the_same_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VIZDEX_MODELS", str(MODEL_DIR))  # the command's default models
    photos = near_copy_set(4, seed=SEEDS[-1])
    write_set(tmp_path / "photos", photos)
    data = ["--data-dir", str(tmp_path / "data")]
    ingest_argv = ["ingest", str(tmp_path / "photos"), "-c", "near", *data, "--device", "cpu"]
    assert main([*ingest_argv, "--dtype", "float32", "--quiet", "--json"]) == 0
    capsys.readouterr()
    threshold = ["--threshold", str(NEAR_COPY_THRESHOLD)]
    assert main(["duplicates", "-c", "near", *threshold, *data, "--json"]) == 0
    result: Any = json.loads(capsys.readouterr().out)
    assert result["model"] == str(MODEL_DIR) and result["scanned"] == len(photos)
    groups = {
        frozenset(Path(image["source"]).name for image in group["images"])
        for group in result["groups"]
    }
    assert groups == expected_groups(photos)
