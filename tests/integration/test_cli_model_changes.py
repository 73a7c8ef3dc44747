"""`vizdex collections add-model | set-default | remove-model`, `collections --json` and
`vizdex gc` through the command line (in-process ``main``), tiny random models, real SQLite."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.ingest_helpers import photo_folder
from vizdex.cli.main import main


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one-line error of a command that exits 2 (a refusal)."""
    capsys.readouterr()
    assert main(list(argv)) == 2
    return capsys.readouterr().err


def _run(*argv: str) -> Any:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(argv)) == 0
    return json.loads(out.getvalue()) if "--json" in argv else out.getvalue()


def test_models_change_through_the_command_line(
    tmp_path: Path, tiny_clip_dir: Path, tiny_dino_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip, dino = str(tiny_clip_dir), str(tiny_dino_dir)
    data = ["--data-dir", str(tmp_path / "data")]
    photos = tmp_path / "photos"
    photo_folder(photos, 4)
    _run("ingest", str(photos), "--collection", "c", "--model", clip, "--quiet", *data)
    added = _run("collections", "add-model", "c", "--model", dino, "--json", *data)
    assert added["job"]["state"] == "done" and added["job"]["done"] == 4
    assert [(m["model"], m["state"], m["coverage"]) for m in added["models"]] == [
        (clip, "ready", 1.0),
        (dino, "ready", 1.0),
    ]
    listed = _run("collections", "--json", *data)
    assert listed[0]["states"] == {clip: "ready", dino: "ready"}
    assert (listed[0]["text_model"], listed[0]["image_model"]) == (clip, clip)

    assert "vision-only" in _refused(
        capsys, "collections", "set-default", "c", "--text", dino, *data
    )
    switched = _run("collections", "set-default", "c", "--image", dino, "--json", *data)
    assert (switched["text_model"], switched["image_model"]) == (clip, dino)
    refusal = _refused(capsys, "collections", "remove-model", "c", "--model", dino, *data)
    assert "is a default of collection 'c'" in refusal
    _run("collections", "set-default", "c", "--image", clip, *data)
    removed = _run("collections", "remove-model", "c", "--model", dino, "--json", *data)
    assert [m["model"] for m in removed["models"]] == [clip]

    # Folder images keep their files; gc removes nothing a row still references.
    report = _run("gc", "--grace", "0", "--json", *data)
    assert report["files_removed"] == 0 and report["rows"]["images"] == 4
    assert "removed 0 files" in _run("gc", *data)


def test_a_model_directory_spelled_otherwise_is_the_same_model(
    tmp_path: Path,
    tiny_clip_dir: Path,
    tiny_dino_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`clip/` or `./clip` named a second model (embedded again, under a name no server had
    loaded, so uploads were refused): the collection's own spelling is used, and a new
    directory is recorded as its absolute path (meaningful to every process)."""
    clip, dino = str(tiny_clip_dir), str(tiny_dino_dir)
    data = ["--data-dir", str(tmp_path / "data")]
    photo_folder(tmp_path / "photos", 2)
    _run("ingest", str(tmp_path / "photos"), "-c", "c", "--model", clip, "--quiet", *data)
    monkeypatch.chdir(tiny_dino_dir.parent)
    added = _run(
        "collections", "add-model", "c", "--model", f"./{tiny_dino_dir.name}/", "--json", *data
    )
    assert [m["model"] for m in added["models"]] == [clip, dino]
    for spelling in (f"{clip}/", str(Path(clip).parent / "." / Path(clip).name)):
        again = _run("collections", "add-model", "c", "--model", spelling, "--json", *data)
        assert [m["model"] for m in again["models"]] == [clip, dino], spelling
        assert again["job"]["done"] == 0
    switched = _run(
        "collections", "set-default", "c", "--image", f"{tiny_dino_dir.name}/", "--json", *data
    )
    assert switched["image_model"] == dino
    _run("collections", "set-default", "c", "--image", clip, *data)
    removed = _run(
        "collections", "remove-model", "c", "--model", f"./{tiny_dino_dir.name}", "--json", *data
    )
    assert [m["model"] for m in removed["models"]] == [clip]


@pytest.mark.parametrize(
    "argv",
    [
        ["gc", "--grace", "nan"],  # nan compared as no grace period at all: young files went
        ["gc", "--grace", "inf"],
        ["gc", "--grace", "-5"],
        ["collections", "add-model", "c", "--model", "m", "--share", "nan"],
        ["duplicates", "--collection", "c", "--threshold", "nan"],
        ["worker", "--poll", "inf"],
        ["follow", "--interval", "nan"],
    ],
)
def test_float_flags_refuse_what_is_not_a_finite_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    capsys.readouterr()
    try:
        code = main([*argv, "--data-dir", str(tmp_path / "data")])
    except SystemExit as usage:  # argparse refuses a flag's value itself
        code = int(str(usage.code))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and ("finite" in err or ">= 0" in err), err
    assert not (tmp_path / "data").exists()  # refused before anything is opened


def test_settings_below_their_minimum_are_refused_not_raised_to_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """VIZDEX_JOB_RETENTION_S=-1 ("keep forever" to many) pruned every finished job, and
    VIZDEX_GC_GRACE_S=-1 removed files an ingest was about to reference."""
    for name in ("VIZDEX_JOB_RETENTION_S", "VIZDEX_GC_GRACE_S"):
        monkeypatch.setenv(name, "-1")
        err = _refused(capsys, "gc", "--data-dir", str(tmp_path / "data"))
        assert err.count("\n") == 1 and f"{name} must be at least 0, got -1" in err, err
        monkeypatch.delenv(name)
