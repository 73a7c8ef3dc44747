"""`vizdex search` by text, by image file and by id, on a collection ingested through the CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.ingest_helpers import photo_folder
from vizdex.cli.main import main


@dataclass(frozen=True)
class Ingested:
    data: Path
    files: list[Path]


@pytest.fixture(scope="module")
def ingested(
    tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path, tiny_dino_dir: Path
) -> Ingested:
    root = tmp_path_factory.mktemp("search-cli")
    files = photo_folder(root / "photos", 8)
    data = root / "data"
    for name, models in (("both", [tiny_clip_dir, tiny_dino_dir]), ("dino", [tiny_dino_dir])):
        flags = [flag for model in models for flag in ("--model", str(model))]
        argv = ["ingest", str(root / "photos"), "-c", name, *flags, "--data-dir", str(data)]
        assert main([*argv, "--device", "cpu", "--quiet", "--json"]) == 0
    return Ingested(data, files)


def _search(ingested: Ingested, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    assert main(["search", *args, "--data-dir", str(ingested.data), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_an_image_file_finds_itself_first(
    ingested: Ingested, tiny_dino_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    target = ingested.files[3]
    result = _search(ingested, capsys, "-c", "both", "--image", str(target), "-k", "3")
    assert result["model"] == str(tiny_dino_dir)  # image queries prefer the vision model
    hits = result["hits"]
    assert [hit["rank"] for hit in hits] == [1, 2, 3]
    assert hits[0]["source"] == str(target) and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert hits[0]["thumbnail"].startswith("thumbs/")


def test_text_search_uses_the_clip_model(
    ingested: Ingested, tiny_clip_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    result = _search(ingested, capsys, "-c", "both", "--text", "a red bicycle", "-k", "5")
    assert result["model"] == str(tiny_clip_dir)
    assert len(result["hits"]) == 5
    assert {hit["source"] for hit in result["hits"]} <= {str(f) for f in ingested.files}


def test_id_search_excludes_the_image_itself(
    ingested: Ingested, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    first = _search(ingested, capsys, "-c", "dino", "--image", str(ingested.files[2]), "-k", "1")
    image_id = first["hits"][0]["id"]  # ids are global: this collection's are not 1..8
    result = _search(ingested, capsys, "-c", "dino", "--id", str(image_id), "-k", "10")
    ids = [hit["id"] for hit in result["hits"]]
    assert len(ids) == 7 and image_id not in ids


def test_plain_output_is_ranked_lines(
    ingested: Ingested, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    target = ingested.files[0]
    argv = ["search", "-c", "dino", "--image", str(target), "-k", "2"]
    assert main([*argv, "--data-dir", str(ingested.data)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("  1  1.0000  #") and lines[0].endswith(str(target))
    assert lines[1].startswith("  2  ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-c", "nope", "--text", "x"], "vizdex: error: collection 'nope' does not exist"),
        (["-c", "dino", "--text", "x"], "has no model that understands text"),
        (["-c", "dino", "--image", "/no/such.jpg"], "/no/such.jpg"),
        (["-c", "dino", "--id", "999"], "image 999 does not exist"),
        (["-c", "dino", "--id", "1", "-k", "0"], "k must be between 1 and"),
    ],
)
def test_errors_are_one_line(
    ingested: Ingested, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["search", *args, "--data-dir", str(ingested.data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vizdex: error: ") and message in err[0]


def test_a_query_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["search", "-c", "x"])
    assert exited.value.code == 2
    assert "one of the arguments --text --image --id is required" in capsys.readouterr().err
