"""Files ingestion keeps in the data directory: thumbnails and uploaded originals.

Both are content-addressed (``thumbs/ab/abcdef….webp``, ``originals/ab/abcdef….jpg``), so the same
image in two collections is one file and a rewrite is harmless. Each file is written to a
temporary name, fsynced and renamed *before* the catalog row that names it is committed: a
committed row never points at a missing or half-written file. Folder images stay where they are.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from PIL import Image

from vizdex.core.errors import UnavailableError
from vizdex.imaging import file_extension
from vizdex.indexer.thumbnails import make_thumbnail
from vizdex.search import ImageRecord, SourceKind, fsync_directory, move_aside

log = logging.getLogger(__name__)
R = TypeVar("R")

TEMP_SUFFIX = ".tmp"
# Set aside on the data disk so that a job that fills it can still record how it ended.
RESERVE_BYTES = 1 << 20
_RESERVE_STEP = 64 << 10
# The data directory's folders. What stands where a scratch one belongs (a file, a FIFO, a
# broken link) is moved aside and the folder made again, as with index folders: their content
# is remade on demand. Originals are the only copy of uploads: a problem there stops vizdex.
FOLDERS = ("tmp", "thumbs", "locks", "originals")
_SCRATCH = frozenset({"tmp", "thumbs", "locks"})


class DataStore:
    """Paths and atomic writes under one data directory; safe to use from many threads."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir).resolve()
        self.temp_dir = self.root / "tmp"
        self.locks_dir = self.root / "locks"

    def prepare(self) -> None:
        """Make the data directory's folders now (see ``FOLDERS``), so that a problem with them
        stops a command or a server before it starts, in one line, rather than failing each
        write later."""
        for name in FOLDERS:
            self.folder(self.root / name)

    def folder(self, path: Path) -> Path:
        """``path`` (inside the data directory) as a folder, made if missing.

        A link to a folder elsewhere is followed (e.g. originals on another disk). Anything else
        standing in the way is moved aside in a scratch folder, and an ``UnavailableError``
        naming it elsewhere.
        """
        try:
            path.mkdir(parents=True, exist_ok=True)
            return path
        except OSError as error:
            if error.errno not in (errno.EEXIST, errno.ENOTDIR, errno.ELOOP):
                raise
        blocker = self._first_non_folder(path)
        if blocker is not None:
            if blocker.relative_to(self.root).parts[0] not in _SCRATCH:
                raise UnavailableError(
                    f"{blocker} should be a folder but is {_what_is(blocker)}: move it away, or "
                    "make it a folder (or a link to one), then try again"
                )
            move_aside(blocker, "not a folder")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _first_non_folder(self, path: Path) -> Path | None:
        """The first of ``path`` and its parents below the root that exists but is no folder."""
        current = self.root
        for part in path.relative_to(self.root).parts:
            current = current / part
            if not os.path.lexists(current):
                return None
            if not current.is_dir():
                return current
        return None

    # -- names ---------------------------------------------------------------------------------

    @staticmethod
    def thumbnail_name(sha256: str) -> str:
        return f"thumbs/{sha256[:2]}/{sha256}.webp"

    @staticmethod
    def original_name(sha256: str, image_format: str) -> str:
        return f"originals/{sha256[:2]}/{sha256}.{file_extension(image_format)}"

    def resolve(self, name: str) -> Path:
        """The file a stored relative name refers to; names may not leave the data directory.

        Checked on the name, not by following links: a link the operator made inside the data
        directory (thumbnails on another disk) is theirs to make.
        """
        parts = PurePosixPath(name).parts
        if not parts or parts[0] == "/" or ".." in parts or "\\" in name:
            raise ValueError(f"{name!r} is outside the data directory")
        return self.root / name

    def image_file(self, image: ImageRecord) -> Path | None:
        """Where an image's bytes are: its own path, or the original kept for uploads and URLs."""
        if image.source_kind is SourceKind.PATH:
            return Path(image.source_uri) if image.source_uri else None
        return self.resolve(self.original_name(image.sha256, image.format))

    def thumbnail_file(self, image: ImageRecord) -> Path | None:
        return self.resolve(image.thumbnail_path) if image.thumbnail_path else None

    # -- writes --------------------------------------------------------------------------------

    def put_thumbnail(
        self, sha256: str, image: Image.Image, *, longest: int = 256, quality: int = 80
    ) -> str:
        name = self.thumbnail_name(sha256)
        target = self.root / name
        with self.files_lock():
            if not _reuse(target):
                self.write_atomic(target, make_thumbnail(image, longest=longest, quality=quality))
        return name

    def has(self, name: str) -> bool:
        return (self.root / name).is_file()

    def put_files(self, files: Sequence[tuple[str, bytes]], pool: Executor | None = None) -> None:
        """Write several files (relative names), each whole or absent; existing ones are kept.

        Like ``write_atomic`` per file, but each folder is fsynced once for the whole set, and
        with a ``pool`` the writes, renames and flushes run side by side.
        """
        with self.files_lock():
            outcomes = _map_all(self._stage, files, pool)
            staged = [entry for entry in outcomes if isinstance(entry, tuple)]
            if any(isinstance(entry, Exception) for entry in outcomes):
                self._discard(staged)
                _raise_first(outcomes)
            self._commit(staged, pool)

    def _stage(self, name: str, data: bytes) -> tuple[Path, Path] | None:
        """Write and fsync ``data`` under a temporary name for ``name``: (temporary, target), or
        None when ``name`` is already stored. Safe to call from many threads."""
        target = self.root / name
        if _reuse(target):
            return None
        return self._write_temporary(target, data), target

    def _commit(self, staged: Sequence[tuple[Path, Path]], pool: Executor | None = None) -> None:
        """Rename staged files into place, then fsync each folder they landed in, once.

        A crash leaves temporaries (swept later) or whole files, never a named partial one.
        """
        if not staged:
            return
        renamed = _map_all(os.replace, staged, pool)
        if any(isinstance(outcome, Exception) for outcome in renamed):
            self._discard(staged)  # the ones renamed are whole files, and stay
            _raise_first(renamed)
        folders = {target.parent for _, target in staged}
        _raise_first(_map_all(fsync_directory, [(folder,) for folder in folders], pool))

    @staticmethod
    def _discard(staged: Sequence[tuple[Path, Path]]) -> None:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)

    def put_original(self, sha256: str, image_format: str, data: bytes) -> str:
        name = self.original_name(sha256, image_format)
        target = self.root / name
        with self.files_lock():
            if not _reuse(target):
                self.write_atomic(target, data)
        return name

    def write_atomic(self, target: Path, data: bytes) -> None:
        """Write, fsync, rename into place, fsync the folder: the file is whole or absent."""
        temporary = self._write_temporary(target, data)
        try:
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        fsync_directory(target.parent)

    def _write_temporary(self, target: Path, data: bytes) -> Path:
        """``data`` written and fsynced under a temporary name, with ``target``'s folder made."""
        self.folder(target.parent)
        self.folder(self.temp_dir)
        temporary = self.temp_dir / f"{target.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return temporary

    # -- removal (``indexer.collector``) -------------------------------------------------------

    @contextmanager
    def files_lock(self, *, exclusive: bool = False) -> Iterator[None]:
        """Writers hold it shared while they decide to reuse or write a stored file; removal holds
        it exclusive. With ``_reuse`` refreshing a reused file's mtime, a file removal sees as
        old is one no writer has just decided to keep (any process on this data directory)."""
        try:  # ``folder``: what stands where locks/ belongs is moved aside, as for every write
            descriptor = os.open(
                self.folder(self.locks_dir) / "files.lock", os.O_RDWR | os.O_CREAT, 0o600
            )
        except OSError as error:
            if error.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            # A data directory this process may only read: it removes nothing, so there is
            # nothing to order its reads against.
            yield
            return
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(descriptor)  # closing releases the lock

    def stored_files(self) -> Iterator[tuple[str, list[str]]]:
        """(shard folder, its file names) for every thumbnail and original shard folder."""
        for area in ("thumbs", "originals"):
            top = self.root / area
            if not top.is_dir():
                continue
            for shard in sorted(os.scandir(top), key=lambda entry: entry.name):
                if shard.is_dir(follow_symlinks=False):
                    names = [entry.name for entry in os.scandir(shard.path) if entry.is_file()]
                    yield f"{area}/{shard.name}", sorted(names)

    def spooled_files(self) -> list[str]:
        """Every upload spooled for a queued job (``queue/<job token>/<position>``), relative."""
        top = self.root / "queue"
        if not top.is_dir():
            return []
        return sorted(
            f"queue/{folder.name}/{entry.name}"
            for folder in os.scandir(top)
            if folder.is_dir(follow_symlinks=False)
            for entry in os.scandir(folder.path)
            if entry.is_file(follow_symlinks=False)
        )

    def remove_files(self, names: Iterable[str], *, min_age_s: float) -> tuple[int, int]:
        """Unlinks the stored files ``names`` (relative) older than ``min_age_s``, then their
        emptied shard folders; the caller holds ``files_lock(exclusive=True)`` and has checked
        that no row names them. Returns (files removed, bytes freed)."""
        cutoff = time.time() - min_age_s
        removed = freed = 0
        folders: set[Path] = set()
        for name in names:
            path = self.resolve(name)
            try:
                info = path.stat()
                if min_age_s > 0 and info.st_mtime >= cutoff:
                    continue  # may be an ingest's, decided on just now: the next sweep takes it
                path.unlink()
            except FileNotFoundError:
                continue
            removed += 1
            freed += info.st_size
            folders.add(path.parent)
        for folder in folders:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        return removed, freed

    # -- room for the end of a job ---------------------------------------------------------------

    @property
    def reserve_file(self) -> Path:
        return self.root / "reserve"

    def keep_reserve(self) -> int:
        """Grow ``reserve`` towards ``RESERVE_BYTES`` as far as the disk allows; its size.

        A job that meets a full disk gives it back (``release_reserve``) to write its final
        state, then takes back what is left. Best effort: a reserve it cannot make stops nothing.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.reserve_file, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return 0
        try:
            size = os.fstat(descriptor).st_size
            while size < RESERVE_BYTES:
                step = min(_RESERVE_STEP, RESERVE_BYTES - size)
                try:
                    os.posix_fallocate(descriptor, size, step)  # blocks really taken, not sparse
                except OSError:  # the disk is full (or cannot allocate): keep what was taken
                    os.ftruncate(descriptor, size)
                    break
                size += step
            return size
        except OSError:
            return 0
        finally:
            os.close(descriptor)

    def release_reserve(self) -> bool:
        """Free the reserve for the writes that record a job's end; False if there was none."""
        try:
            self.reserve_file.unlink()
        except OSError:
            return False
        return True

    def sweep_temporaries(self, older_than_s: float = 3600.0) -> int:
        """Remove temporaries a killed process left behind (young ones may still be in use)."""
        if not self.temp_dir.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        removed = 0
        for entry in os.scandir(self.temp_dir):
            try:
                if entry.name.endswith(TEMP_SUFFIX) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue
        if removed:
            log.info("removed %d stale temporary files from %s", removed, self.temp_dir)
        return removed


def _reuse(target: Path) -> bool:
    """Whether ``target`` is already stored; if so its mtime becomes now, so a removal running
    beside this writer sees it as young and keeps it until the writer's row is committed.

    Only a regular file (or a link to one: the operator's) counts: a folder or a FIFO standing
    there would be served as the file, so it is moved aside and the file written anew."""
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:  # nothing there, or a link to nothing: the rename replaces it
        return False
    except OSError:  # e.g. a looping link
        mode = 0
    if not stat.S_ISREG(mode):
        move_aside(target, f"{_what_is(target)} stood where a stored file belongs")
        return False
    with contextlib.suppress(OSError):  # e.g. someone else's file: stored, only not refreshed
        os.utime(target)
    return True


def _what_is(path: Path) -> str:
    """What stands at ``path``, in words, for messages."""
    if path.is_symlink():
        return f"a link to {os.readlink(path)} that leads to no folder"
    try:
        mode = path.stat().st_mode
    except OSError:
        return "unreadable"
    if stat.S_ISREG(mode):
        return "a file"
    return "a FIFO" if stat.S_ISFIFO(mode) else "neither a file nor a folder"


def _map_all(
    function: Callable[..., R], arguments: Iterable[tuple[Any, ...]], pool: Executor | None
) -> list[R | Exception]:
    """``function(*args)`` for each argument tuple, in order, in ``pool`` when there is one.

    Each outcome is the result or the exception: every call runs, so a caller can clean up
    after the ones that succeeded before raising.
    """

    def outcome(args: tuple[Any, ...]) -> R | Exception:
        try:
            return function(*args)
        except Exception as error:
            return error

    if pool is None:
        return [outcome(args) for args in arguments]
    return list(pool.map(outcome, arguments))


def _raise_first(outcomes: Iterable[object]) -> None:
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            raise outcome
