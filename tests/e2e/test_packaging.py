"""The distribution installs one import name, ``vizdex``, with every room as a real package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.source_tree import copy_source

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("core", "imaging", "cli", "encoders", "search", "indexer", "web", "migrations")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    """A fresh venv with only the vizdex wheel (no dependencies); its site-packages and what the
    wheel added there."""
    work = tmp_path_factory.mktemp("packaging")
    source = copy_source(ROOT, work / "src")
    wheels = work / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = wheels.glob("vizdex-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    site = Path(purelib)
    before = set(os.listdir(site))
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return site, set(os.listdir(site)) - before


def test_vizdex_is_the_only_top_level_name(installed: tuple[Path, set[str]]) -> None:
    site, added = installed
    assert {name for name in added if not name.endswith(".dist-info")} == {"vizdex"}
    (info,) = [name for name in added if name.endswith(".dist-info")]
    top_level = site / info / "top_level.txt"
    if top_level.exists():
        assert top_level.read_text().split() == ["vizdex"]


def test_every_room_is_a_real_folder_with_its_data(installed: tuple[Path, set[str]]) -> None:
    package = installed[0] / "vizdex"
    for room in ROOMS:
        assert (package / room).is_dir() and not (package / room).is_symlink(), room
        assert (package / room / "__init__.py").is_file(), room
    for data in (
        "py.typed",
        "migrations/alembic.ini",
        "migrations/script.py.mako",
        "web/static/app.js",
        "web/templates/index.html",
    ):
        assert (package / data).is_file(), data
    assert list((package / "migrations" / "versions").glob("v0001_*.py"))
    assert not (package.parent / "tests").exists()


def test_the_core_needs_nothing_but_the_standard_library(
    installed: tuple[Path, set[str]],
) -> None:
    """The wheel was installed without dependencies: the torch-free core must still import."""
    python = installed[0].parents[2] / "bin" / "python"
    code = "import vizdex.core.errors, vizdex.core.env, vizdex.core.kinds; print('ok')"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd="/")
    assert out.stdout.strip() == "ok", out.stderr


def test_the_console_script_points_into_the_namespace(installed: tuple[Path, set[str]]) -> None:
    site, added = installed
    (info,) = [name for name in added if name.endswith(".dist-info")]
    scripts = (site / info / "entry_points.txt").read_text()
    assert "[console_scripts]\nvizdex = vizdex.cli.main:main" in scripts
    assert (site.parents[2] / "bin" / "vizdex").is_file()
