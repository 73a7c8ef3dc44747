"""`vizdex duplicates` on a near-copy photo set ingested through the CLI: text, JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_duplicates import oracle
from tests.support.near_copies import near_copy_set, write_set
from vizdex.cli.main import main
from vizdex.search import DUPLICATE_THRESHOLD, Catalog, SearchSettings


@dataclass(frozen=True)
class Ingested:
    data: Path
    photos: Path


@pytest.fixture(scope="module")
def ingested(
    tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path, tiny_dino_dir: Path
) -> Ingested:
    root = tmp_path_factory.mktemp("duplicates-cli")
    write_set(root / "photos", near_copy_set(3))
    data = root / "data"
    flags = ["--model", str(tiny_clip_dir), "--model", str(tiny_dino_dir)]
    argv = ["ingest", str(root / "photos"), "-c", "near", *flags, "--data-dir", str(data)]
    assert main([*argv, "--device", "cpu", "--quiet", "--json"]) == 0
    return Ingested(data, root / "photos")


def _run(ingested: Ingested, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert main(["duplicates", "-c", "near", *args, "--data-dir", str(ingested.data)]) == 0
    return capsys.readouterr().out


def _stored_groups(ingested: Ingested, model: str, threshold: float) -> set[frozenset[int]]:
    catalog = Catalog.open(SearchSettings.for_data_dir(ingested.data).catalog)
    try:
        record = catalog.get_collection("near")
        images = catalog.list_images(record.id, limit=1000)
        ids, vectors = catalog.get_vectors(record.id, model, [image.id for image in images])
    finally:
        catalog.close()
    return oracle(ids.tolist(), vectors, threshold)


def test_json_lists_the_groups_the_vectors_imply(
    ingested: Ingested, tiny_dino_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result: Any = json.loads(_run(ingested, capsys, "--json"))
    assert result["model"] == str(tiny_dino_dir)  # the vision model by default
    assert result["threshold"] == DUPLICATE_THRESHOLD and result["scanned"] == 24
    groups = {frozenset(image["id"] for image in g["images"]) for g in result["groups"]}
    assert groups == _stored_groups(ingested, str(tiny_dino_dir), DUPLICATE_THRESHOLD)
    for group in result["groups"]:
        assert group["images"][0]["keeper"] and group["size"] == len(group["images"])
        assert sum(image["keeper"] for image in group["images"]) == 1
        assert all(image["source"].startswith(str(ingested.photos)) for image in group["images"])


def test_csv_has_one_row_per_grouped_image(
    ingested: Ingested, capsys: pytest.CaptureFixture[str]
) -> None:
    as_json: Any = json.loads(_run(ingested, capsys, "--json", "--threshold", "0.8"))
    rows = list(csv.DictReader(io.StringIO(_run(ingested, capsys, "--csv", "--threshold", "0.8"))))
    assert len(rows) == sum(len(g["images"]) for g in as_json["groups"])
    assert rows[0].keys() >= {"group", "id", "keeper", "similarity", "width", "byte_size"}
    keepers = [row for row in rows if row["keeper"] == "True"]
    assert len(keepers) == len(as_json["groups"])


def test_text_output_and_a_keeper_rule(
    ingested: Ingested, tiny_clip_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _run(ingested, capsys, "--prefer", "oldest", "--model", str(tiny_clip_dir))
    assert text.startswith("group 1: ") and " keep #" in text
    assert f"scanned with {tiny_clip_dir} at threshold {DUPLICATE_THRESHOLD:g}" in text
    nothing = _run(ingested, capsys, "--threshold", "1", "--where", "no_such_key=1")
    assert nothing.startswith("no near-duplicates in 'near'")


@pytest.mark.parametrize("threshold", ["1.5", "-2"])
def test_a_threshold_outside_minus_one_to_one_is_refused(
    ingested: Ingested, capsys: pytest.CaptureFixture[str], threshold: str
) -> None:
    capsys.readouterr()
    argv = ["duplicates", "-c", "near", "--threshold", threshold, "--data-dir", str(ingested.data)]
    assert main(argv) == 2
    assert "threshold must be a cosine similarity between -1 and 1" in capsys.readouterr().err
