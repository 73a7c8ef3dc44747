"""Find the image files of an ingestion: folder walks, explicit files and path lists, streamed.

Nothing here holds more than one directory listing at a time (plus the set of folders already
walked), so a scan of millions of files runs in bounded memory. Order is deterministic: names are
sorted within each folder, a folder's files come before its subfolders.

Symbolic links are followed only when their target lies inside the folder being scanned; files
are reported by their real path, so a photo reached through a link and directly is one path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from vizdex.core.errors import InvalidInputError, NotFoundError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inputs:
    """Validated, resolved inputs: folders to walk and files named one by one."""

    folders: tuple[str, ...]
    files: tuple[str, ...]
    files_from: str | None = None


def resolve_inputs(paths: Sequence[str], files_from: str | None = None) -> Inputs:
    """Real paths of the given folders and files; a path that does not exist is an error."""
    folders: list[str] = []
    files: list[str] = []
    for path in paths:
        real = os.path.realpath(path)
        if os.path.isdir(real):
            folders.append(real)
        elif os.path.isfile(real):
            files.append(real)
        elif os.path.lexists(path):
            raise InvalidInputError(
                f"{path!r} is neither a regular file nor a folder (a FIFO, a device, or a link "
                "that loops or leads to nothing)"
            )
        elif "://" in path:
            raise InvalidInputError(f"{path!r}: only http(s) URLs can be ingested")
        else:
            raise NotFoundError(f"there is no file or folder at {path!r}", code="path_not_found")
    listing = None
    if files_from is not None:
        listing = os.path.realpath(files_from)
        if not os.path.isfile(listing):
            raise NotFoundError(
                f"the list of files {files_from!r} does not exist", code="path_not_found"
            )
    return Inputs(tuple(folders), tuple(files), listing)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _wanted(name: str, extensions: frozenset[str]) -> bool:
    _, dot, ext = name.rpartition(".")
    return bool(dot) and ext.lower() in extensions


def walk_folder(
    root: str, extensions: Sequence[str], *, include_hidden: bool = False
) -> Iterator[str]:
    """Real paths of the image files under ``root`` (itself a real path), recursively."""
    wanted = frozenset(extensions)
    visited = {root}
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            log.warning("cannot list %s: %s", directory, error.strerror or error)
            continue
        subfolders: list[str] = []
        for entry in entries:
            if not include_hidden and entry.name.startswith("."):
                continue
            try:
                if entry.is_symlink():
                    real = os.path.realpath(entry.path)
                    if not _within(real, root):
                        log.info("not following %s: it points outside %s", entry.path, root)
                    elif os.path.isdir(real):
                        if real not in visited:
                            visited.add(real)
                            subfolders.append(real)
                    elif os.path.isfile(real) and _wanted(real, wanted):
                        yield real
                elif entry.is_dir(follow_symlinks=False):
                    if entry.path not in visited:
                        visited.add(entry.path)
                        subfolders.append(entry.path)
                elif entry.is_file(follow_symlinks=False) and _wanted(entry.name, wanted):
                    yield entry.path
            except OSError as error:  # vanished or unreadable while we looked
                log.warning("skipping %s: %s", entry.path, error.strerror or error)
        stack.extend(reversed(subfolders))


def _listed(files_from: str) -> Iterator[str]:
    """The listed paths; a line no file can be named by (a NUL byte, bytes that are not UTF-8,
    which the catalog cannot store) is skipped with a warning instead of ending the job."""
    with open(files_from, encoding="utf-8", errors="surrogateescape") as listing:
        for number, line in enumerate(listing, start=1):
            path = line.rstrip("\r\n")
            if not path.strip():
                continue
            try:
                if "\x00" in path:
                    raise ValueError("it contains a NUL byte")
                path.encode("utf-8")
            except (ValueError, UnicodeEncodeError) as error:
                reason = "it is not UTF-8" if isinstance(error, UnicodeEncodeError) else error
                log.warning("skipping line %d of %s: %s", number, files_from, reason)
                continue
            yield os.path.realpath(os.path.join(os.path.dirname(files_from), path))


def discover(
    inputs: Inputs, extensions: Sequence[str], *, include_hidden: bool = False
) -> Iterator[str]:
    """Every file of the ingestion, as a real path: named files, listed files, then folders.

    Named and listed files are tried whatever their extension: the image door decides.
    """
    yield from inputs.files
    if inputs.files_from is not None:
        yield from _listed(inputs.files_from)
    for folder in inputs.folders:
        yield from walk_folder(folder, extensions, include_hidden=include_hidden)


def count(inputs: Inputs, extensions: Sequence[str], *, include_hidden: bool = False) -> int:
    """How many files ``discover`` will yield: a walk without stat calls, for the job's total."""
    return sum(1 for _ in discover(inputs, extensions, include_hidden=include_hidden))
