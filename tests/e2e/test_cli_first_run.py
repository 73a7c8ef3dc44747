"""A newcomer's first commands end with one line saying what is wrong, and a non-zero exit.

`vizdex serve` without its model used to print a 67-line exception group from the server's
lifespan, with the useful sentence at line 64; errors from the disk printed tracebacks.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.image_corpus import encode, photo_like
from vizdex.cli.main import main
from vizdex.search import gpu_available

ROOT = Path(__file__).resolve().parents[2]


def vizdex(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "HOME": env.get("HOME", "/tmp"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "vizdex", *args],
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=timeout,
        cwd=ROOT,
    )


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_serve_without_its_model_says_which_and_how(tmp_path: Path) -> None:
    env = {"HF_HOME": str(tmp_path / "hf"), "VIZDEX_DATA_DIR": str(tmp_path / "data")}
    out = vizdex("serve", "--port", "0", env=env)
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert line.startswith("vizdex: error: model 'openai/clip-vit-base-patch32' could not be found")
    assert "VIZDEX_MODELS=" in line


@pytest.mark.skipif(gpu_available(), reason="FAISS sees a GPU here: the GPU index device is valid")
def test_serve_on_a_gpu_index_without_one_is_one_line(tiny_clip_dir: Path, tmp_path: Path) -> None:
    env = {
        "VIZDEX_MODELS": str(tiny_clip_dir),
        "VIZDEX_DATA_DIR": str(tmp_path / "data"),
        "VIZDEX_INDEX_DEVICE": "gpu",
    }
    out = vizdex("serve", "--port", "0", env=env)
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert line.startswith("vizdex: error: VIZDEX_INDEX_DEVICE=gpu, but FAISS has no GPU")
    assert "auto/cpu" in line
    assert not (tmp_path / "data").exists()  # checked before anything was written


def test_serve_on_a_taken_port_is_one_line(tiny_clip_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"VIZDEX_MODELS": str(tiny_clip_dir), "VIZDEX_DATA_DIR": str(tmp_path / "data")}
        out = vizdex("serve", "--port", str(port), env=env)
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert line.startswith(f"vizdex: error: cannot listen on 127.0.0.1:{port}:")
    assert "--port" in line
    assert not (tmp_path / "data").exists()  # checked before anything was written


def test_a_data_directory_that_is_a_file_is_one_line(
    tiny_clip_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    data = ["--data-dir", str(blocker / "data")]
    code = main(["collections", "create", "c", "--model", str(tiny_clip_dir), *data])
    err = capsys.readouterr().err
    assert code == 1
    assert one_line(err).startswith("vizdex: error: Not a directory")


def test_an_unexpected_error_is_one_line_and_verbose_shows_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug still ends in one line; --verbose is how to get the traceback for a report."""
    from vizdex.cli import collections

    def broken(_args: object) -> int:
        raise RuntimeError("something broke\nover two lines")

    monkeypatch.setattr(collections, "run_list", broken)
    code = main(["collections", "list", "--data-dir", str(tmp_path)])
    line = one_line(capsys.readouterr().err)
    assert code == 1
    assert line == (
        "vizdex: internal error: RuntimeError: something broke (--verbose shows the traceback)"
    )
    assert main(["-v", "collections", "list", "--data-dir", str(tmp_path)]) == 1
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_serve_on_a_port_out_of_range_is_one_line(
    port: str, tiny_clip_dir: Path, tmp_path: Path
) -> None:
    """getaddrinfo wraps 70000 round to 4464: checked before any model is loaded."""
    env = {"VIZDEX_MODELS": str(tiny_clip_dir), "VIZDEX_DATA_DIR": str(tmp_path / "data")}
    out = vizdex("serve", "--port", port, env=env)
    assert out.returncode == 2
    assert one_line(out.stderr) == (
        f"vizdex: error: the port must be between 0 and 65535, not {port}"
    )


def test_a_catalog_that_is_not_a_database_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "catalog.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    code = main(["collections", "list", "--data-dir", str(tmp_path)])
    line = one_line(capsys.readouterr().err)
    assert code == 2
    assert line.startswith("vizdex: error: sqlite:///") and "is not a vizdex catalog" in line


def test_a_catalog_path_that_is_a_folder_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "catalog.db").mkdir()
    code = main(["collections", "list", "--data-dir", str(tmp_path)])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and "cannot open the catalog database" in line


def test_damaged_weights_name_the_model(
    tiny_clip_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken-clip"
    shutil.copytree(tiny_clip_dir, broken)
    (weights,) = broken.glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[:1000])
    code = main(["models", "--load", "--model", str(broken)])
    line = one_line(capsys.readouterr().err)
    assert code == 2
    assert f"could not load the weights of model '{broken}'" in line and "damaged" in line


# Found by the second adversarial run: usage errors printed argparse's usage block before the
# error (six lines for `--id abc`), and a damaged TIFF's Pillow warning ("Corrupt EXIF data",
# with its source line) went to stderr beside the one-line refusal.


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["search", "-c", "c", "--id", "abc"], "vizdex search: error: argument --id: invalid int"),
        (["search", "-c", "c"], "vizdex search: error: one of the arguments"),
        (["bogus"], "vizdex: error: argument COMMAND: invalid choice: 'bogus'"),
        (["collections", "create"], "vizdex collections create: error: the following argument"),
    ],
)
def test_a_usage_error_is_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    line = one_line(capsys.readouterr().err)
    assert exited.value.code == 2
    assert line.startswith(says) and line.endswith("--help)")


def test_a_library_warning_does_not_join_the_error(tiny_clip_dir: Path, tmp_path: Path) -> None:
    """Warnings are log records: shown with --verbose, not beside the error."""
    data = tmp_path / "data"
    code = main(
        ["collections", "create", "c", "--model", str(tiny_clip_dir), "--data-dir", str(data)]
    )
    assert code == 0
    whole = encode(photo_like(64, 48), "TIFF", compression="tiff_lzw")
    damaged = tmp_path / "damaged.tif"
    damaged.write_bytes(whole[: len(whole) // 2])  # the EXIF offset now points past the end
    env = {"VIZDEX_DATA_DIR": str(data), "VIZDEX_DEVICE": "cpu"}
    out = vizdex("search", "-c", "c", "--image", str(damaged), env=env)
    assert out.returncode == 2
    assert one_line(out.stderr).startswith("vizdex: error: the TIFF image is damaged")
    verbose = vizdex("-v", "search", "-c", "c", "--image", str(damaged), env=env)
    assert "UserWarning: Corrupt EXIF data" in verbose.stderr
