"""`vizdex collections` (list, create, delete) and `vizdex reindex`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.ingest_helpers import assert_index_matches_catalog, photo_folder
from vizdex.cli.main import main
from vizdex.search import Catalog, IndexStore, SearchSettings


def test_create_list_delete(
    tmp_path: Path, tiny_clip_dir: Path, tiny_dino_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    argv = ["collections", "create", "art", "--model", str(tiny_clip_dir)]
    assert main([*argv, "--model", str(tiny_dino_dir), *data]) == 0
    assert capsys.readouterr().out.strip() == (
        f"created collection 'art' with models: {tiny_clip_dir}, {tiny_dino_dir}"
    )
    assert main(["collections", "create", "zoo", "--model", str(tiny_dino_dir), *data]) == 0
    capsys.readouterr()

    assert main(["collections", "list", "--json", *data]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["images"], r["models"]) for r in rows] == [
        ("art", 0, [str(tiny_clip_dir), str(tiny_dino_dir)]),
        ("zoo", 0, [str(tiny_dino_dir)]),
    ]
    assert main(["collections", *data]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("art") and "0 images" in lines[0]

    assert main(["collections", "delete", "zoo", *data]) == 2
    assert "add --yes" in capsys.readouterr().err
    assert main(["collections", "delete", "zoo", "--yes", *data]) == 0
    assert capsys.readouterr().out.strip() == "deleted collection 'zoo' (0 images)"
    assert main(["collections", "--json", *data]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["art"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["collections", "create", "bad name!", "--model", "{clip}"], "collection name"),
        (["collections", "create", "x", "--model", "{missing}"], "{missing}"),
        (["collections", "delete", "ghost", "--yes"], "collection 'ghost' does not exist"),
        (["reindex", "-c", "ghost"], "collection 'ghost' does not exist"),
    ],
)
def test_errors_are_one_line(
    tmp_path: Path,
    tiny_clip_dir: Path,
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    values = {"clip": str(tiny_clip_dir), "missing": str(tmp_path / "no-model")}
    argv = [arg.format(**values) for arg in argv]
    assert main(["collections", "--data-dir", str(tmp_path / "data"), "--json"]) == 2
    capsys.readouterr()
    Catalog.open(SearchSettings.for_data_dir(tmp_path / "data").catalog).close()
    assert main([*argv, "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.format(**values) in err[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["collections"],
        ["collections", "delete", "photos", "--yes"],
        ["collections", "remove-model", "photos", "--model", "m"],
        ["search", "-c", "photos", "--text", "a cat"],
        ["duplicates", "-c", "photos"],
        ["reindex", "-c", "photos"],
        ["jobs"],
        ["gc"],
    ],
)
def test_commands_that_only_read_refuse_a_data_dir_without_a_catalog(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped --data-dir is an error naming the path, not an empty answer, and leaves no
    new catalog (nor folder) behind."""
    missing = tmp_path / "no-such-data"
    assert main([*argv, "--data-dir", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"no catalog at {missing / 'catalog.db'}" in err[0], err
    assert not missing.exists()


@pytest.mark.parametrize("argv", [["collections"], ["jobs"], ["gc"]])
def test_commands_that_only_read_refuse_a_zero_byte_catalog_and_leave_it_so(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLite opens a zero-byte file as an empty database: a read would write a whole new
    catalog into it (an interrupted copy, a touched file) and answer "no collections yet"."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "catalog.db").touch()
    assert main([*argv, "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"no catalog at {data / 'catalog.db'}" in err[0], err
    assert [p.name for p in data.iterdir()] == ["catalog.db"]
    assert (data / "catalog.db").stat().st_size == 0


def test_reindex_rebuilds_the_index_files_from_the_catalog(
    tmp_path: Path, tiny_clip_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    photo_folder(tmp_path / "photos", 5)
    argv = ["ingest", str(tmp_path / "photos"), "-c", "c", "--model", str(tiny_clip_dir)]
    assert main([*argv, "--data-dir", str(data), "--device", "cpu", "-q"]) == 0
    index_files = list((data / "indexes").rglob("*.vdx"))
    assert len(index_files) == 1
    index_files[0].write_bytes(b"garbage")  # reindex must not even need to read it
    capsys.readouterr()

    assert main(["reindex", "-c", "c", "--data-dir", str(data), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["indexes"]
    assert (row["model"], row["vectors"], row["kind"]) == (str(tiny_clip_dir), 5, "flat")
    assert Path(row["file"]).read_bytes()[:8] == b"VZDXIDX1"
    assert not list((data / "indexes").rglob("*.corrupt*"))

    settings = SearchSettings.for_data_dir(data)
    catalog = Catalog.open(settings.catalog)
    indexes = IndexStore(catalog, settings.index)
    try:
        assert len(assert_index_matches_catalog(catalog, indexes, catalog.get_collection("c"))) == 5
    finally:
        indexes.close()
        catalog.close()
