"""Copies of the source tree as git knows it, for builds and mutants that must not touch it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def copy_source(root: Path, destination: Path, *, untracked: bool = False) -> Path:
    """The files git tracks in ``root`` (links stay links), so a copy carries no local debris.

    ``untracked``: also the new files git does not ignore (work not committed yet).
    """
    command = ["git", "ls-files", "-z"]
    if untracked:
        command += ["--cached", "--others", "--exclude-standard"]
    listed = subprocess.run(command, cwd=root, capture_output=True, check=True).stdout
    for name in sorted({entry.decode() for entry in listed.split(b"\0") if entry}):
        source, target = root / name, destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, target)
    return destination
