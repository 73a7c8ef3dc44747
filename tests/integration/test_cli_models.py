"""``vizdex models`` through the real console entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vizdex.cli.main import main


def test_lists_models_from_flags(
    tiny_clip_dir: Path, tiny_dino_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["models", "--model", str(tiny_clip_dir), "--model", str(tiny_dino_dir), "--json"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["model_type"], r["kind"]) for r in rows] == [
        ("clip", "multimodal"),
        ("dinov3_vit", "vision"),
    ]


def test_load_reports_dimension_device_dtype(
    tiny_clip_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["models", "--model", str(tiny_clip_dir), "--device", "cpu", "--load", "--json"]) == 0
    )
    (row,) = json.loads(capsys.readouterr().out)
    assert row == {
        "name": str(tiny_clip_dir),
        "kind": "multimodal",
        "dimensions": 24,
        "device": "cpu",
        "dtype": "float32",
        "precision": "float32",
    }


def _native_bf16_cpu() -> bool:
    """Read here, not through vizdex: AMX-BF16 or AVX512-BF16 among /proc/cpuinfo's flags."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        ("auto", ("bfloat16", "bfloat16") if _native_bf16_cpu() else ("float32", "float32")),
        ("int8", ("float32", "int8")),  # float32 around the int8 linear layers
        ("bfloat16", ("bfloat16", "bfloat16")),
    ],
)
def test_load_reports_the_precision_in_use(
    tiny_clip_dir: Path, dtype: str, expected: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["models", "--model", str(tiny_clip_dir), "--device", "cpu", "--dtype", dtype]
    assert main([*argv, "--load", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["dtype"], row["precision"]) == expected


def test_models_from_environment(tiny_dino_dir: Path, tmp_path: Path) -> None:
    env = {"VIZDEX_MODELS": str(tiny_dino_dir), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "vizdex", "models"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert out.returncode == 0, out.stderr
    assert "model_type=dinov3_vit" in out.stdout and "kind=vision" in out.stdout


def test_unknown_model_is_one_line_and_nonzero(tmp_path: Path) -> None:
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "vizdex", "models", "--model", "openai/clip-vit-base-patch32"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "vizdex: error: model 'openai/clip-vit-base-patch32'"
    )
    assert "Traceback" not in out.stderr


def test_help_describes_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["models", "--help"])
    assert exited.value.code == 0
    assert "VIZDEX_MODELS" in capsys.readouterr().out
