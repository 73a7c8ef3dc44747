"""`vizdex ingest` and `vizdex jobs` through the CLI entry point (in-process)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.support.ingest_helpers import photo_folder
from vizdex.cli.main import main
from vizdex.core.errors import ImageRejectedError
from vizdex.imaging import ImageInputSettings, decode_file
from vizdex.indexer import DataStore, JobLocks
from vizdex.indexer.jobs import close_job, open_job
from vizdex.search import Catalog, CatalogSettings, JobState, SearchSettings
from vizdex.search.settings import default_database_url


def _ingest(capsys: pytest.CaptureFixture[str], data: Path, *args: str) -> tuple[int, str, str]:
    code = main(["ingest", *args, "--data-dir", str(data), "--device", "cpu", "--batch-size", "4"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ingest_creates_the_collection_and_prints_a_summary(
    tmp_path: Path, tiny_clip_dir: Path, tiny_dino_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    files = photo_folder(photos, 6)
    (photos / "broken.jpg").write_bytes(files[0].read_bytes()[:1500])
    data = tmp_path / "data"

    code, out, err = _ingest(
        capsys,
        data,
        str(photos),
        "--collection",
        "trip",
        "--model",
        str(tiny_clip_dir),
        "--model",
        str(tiny_dino_dir),
    )

    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (f"created collection 'trip' with models: {tiny_clip_dir}, {tiny_dino_dir}")
    assert lines[1].startswith("job 1 done: indexed 6, failed 1 in ")
    # The reason is the image door's own refusal of that file, read here from the door itself.
    with pytest.raises(ImageRejectedError) as refusal:
        decode_file(photos / "broken.jpg", ImageInputSettings())
    assert refusal.value.code == "corrupt"
    assert lines[2:4] == [
        "  corrupt (1):",
        f"    {photos / 'broken.jpg'}: {refusal.value.message}",
    ]
    assert "[" in err and "img/s" in err and "ETA" in err  # the progress bar, on stderr

    # A re-run with --json: nothing to do; the collection's models are reused.
    code, out, _ = _ingest(capsys, data, str(photos), "-c", "trip", "--json", "--quiet")
    report = json.loads(out)
    assert code == 0 and report["created_collection"] is False
    assert (report["indexed"], report["unchanged"], report["failed"]) == (0, 6, 1)

    catalog = Catalog.open(SearchSettings.for_data_dir(data).catalog)
    try:
        jobs = catalog.list_jobs()
        assert [job.state for job in jobs] == [JobState.DONE, JobState.DONE]
        assert catalog.count_images(catalog.get_collection("trip").id) == 6
    finally:
        catalog.close()


def test_moves_and_prune_through_the_cli(
    tmp_path: Path, tiny_clip_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    files = photo_folder(photos, 4)
    data = tmp_path / "data"
    model = ["--model", str(tiny_clip_dir)]
    assert _ingest(capsys, data, str(photos), "-c", "c", *model, "-q")[0] == 0
    shutil.move(files[0], photos / "renamed.jpg")
    files[1].unlink()
    code, out, _ = _ingest(capsys, data, str(photos), "-c", "c", "--prune", "--json", "-q")
    report = json.loads(out)
    assert code == 0
    assert (report["moved"], report["pruned"], report["unchanged"]) == (1, 1, 2)


def test_files_from_and_explicit_files(
    tmp_path: Path, tiny_clip_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = photo_folder(tmp_path / "photos", 3)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{files[1]}\n{files[2]}\n")
    code, out, _ = _ingest(
        capsys,
        tmp_path / "data",
        str(files[0]),
        "--files-from",
        str(listing),
        "-c",
        "c",
        "--model",
        str(tiny_clip_dir),
        "--json",
        "-q",
    )
    assert code == 0 and json.loads(out)["indexed"] == 3


def test_errors_are_one_line_with_a_nonzero_exit(
    tmp_path: Path, tiny_clip_dir: Path, tiny_dino_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    code, _, err = _ingest(
        capsys, data, str(tmp_path / "nope"), "-c", "c", "--model", str(tiny_clip_dir)
    )
    assert code == 2
    assert err.strip().splitlines() == [
        f"vizdex: error: there is no file or folder at '{tmp_path / 'nope'}'"
    ]
    # What exists but is no file or folder was also "no file or folder"; so was an ftp:// URL.
    fifo, loop = tmp_path / "fifo.jpg", tmp_path / "loop.jpg"
    os.mkfifo(fifo)
    loop.symlink_to(loop.name)
    for odd in (fifo, loop):
        code, _, err = _ingest(capsys, data, str(odd), "-c", "c", "--model", str(tiny_clip_dir))
        assert code == 2 and err.strip().splitlines() == [
            f"vizdex: error: '{odd}' is neither a regular file nor a folder (a FIFO, a device, "
            "or a link that loops or leads to nothing)"
        ]
    code, _, err = _ingest(capsys, data, "ftp://x/a.png", "-c", "c", "--model", str(tiny_clip_dir))
    assert code == 2 and "only http(s) URLs can be ingested" in err and err.count("\n") == 1

    photos = tmp_path / "photos"
    photo_folder(photos, 1)
    assert (
        _ingest(capsys, data, str(photos), "-c", "c", "--model", str(tiny_clip_dir), "-q")[0] == 0
    )
    code, _, err = _ingest(capsys, data, str(photos), "-c", "c", "--model", str(tiny_dino_dir))
    assert code == 2 and "leave out --model" in err and len(err.strip().splitlines()) == 1

    code, _, err = _ingest(capsys, data, "-c", "c")
    assert code == 2 and err.strip() == (
        "vizdex: error: nothing to ingest: give folders, files, uploads or URLs"
    )


def test_jobs_lists_and_shows_failures(
    tmp_path: Path, tiny_clip_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    photo_folder(photos, 2)
    (photos / "empty.jpg").write_bytes(b"")
    data = tmp_path / "data"
    assert (
        _ingest(capsys, data, str(photos), "-c", "c", "--model", str(tiny_clip_dir), "-q")[0] == 0
    )

    assert main(["jobs", "--data-dir", str(data)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("job 1  done      c  2 done, 0 skipped, 1 failed of 3  (ingest: ")

    assert main(["jobs", "--data-dir", str(data), "--id", "1", "--json"]) == 0
    job = json.loads(capsys.readouterr().out)
    assert (job["state"], job["total"], job["done"], job["failed"]) == ("done", 3, 2, 1)
    assert job["failures"] == [
        {
            "item": str(photos / "empty.jpg"),
            "code": "empty",
            "message": "the file is empty (0 bytes)",
        }
    ]

    assert main(["jobs", "--data-dir", str(data), "--id", "7"]) == 2
    assert capsys.readouterr().err.strip() == "vizdex: error: job 7 does not exist"


def test_jobs_cancel_stops_a_job_another_process_runs(
    tmp_path: Path, tiny_clip_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    photo_folder(photos, 1)
    data = tmp_path / "data"
    assert (
        _ingest(capsys, data, str(photos), "-c", "c", "--model", str(tiny_clip_dir), "-q")[0] == 0
    )
    catalog = Catalog.open(CatalogSettings(database_url=default_database_url(data)))
    locks = JobLocks(DataStore(data).locks_dir)
    try:
        collection = catalog.get_collection("c")
        # A job held by a live runner (its lease), as a server or another shell would hold it.
        job, lease, _ = open_job(catalog, locks, collection.id, kind="ingest", source="elsewhere")
        try:
            assert main(["jobs", "--data-dir", str(data), "--cancel", str(job.id)]) == 0
            (line,) = capsys.readouterr().out.splitlines()
            assert line.startswith(f"job {job.id}  cancelled c  0 done")
            # The runner learns it at its next progress write.
            assert catalog.record_job_progress(job.id, done=1).state is JobState.CANCELLED
        finally:
            close_job(catalog, locks, lease, JobState.CANCELLED)
    finally:
        catalog.close()

    assert main(["jobs", "--data-dir", str(data), "--cancel", "1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "vizdex: error: job 1 already ended (done): nothing to cancel"
    )


@pytest.mark.parametrize("command", ["ingest", "jobs", "search", "collections", "reindex"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert "--data-dir" in capsys.readouterr().out
