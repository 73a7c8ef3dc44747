"""Files ingestion keeps in the data directory: thumbnails and uploaded originals.

Both are content-addressed (``thumbs/ab/abcdef….webp``, ``originals/ab/abcdef….jpg``), so the same
image in two collections is one file and a rewrite is harmless. Each file is written to a
temporary name, fsynced and renamed *before* the catalog row that names it is committed: a
committed row never points at a missing or half-written file. Folder images stay where they are.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path

from PIL import Image

from indexer.durability import flush_directories, flush_files
from indexer.thumbnails import make_thumbnail
from search import ImageRecord, SourceKind, fsync_directory

log = logging.getLogger(__name__)

EXTENSIONS = {
    "JPEG": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tif",
}
TEMP_SUFFIX = ".tmp"


class DataStore:
    """Paths and atomic writes under one data directory; safe to use from many threads."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir).resolve()
        self.temp_dir = self.root / "tmp"
        self.locks_dir = self.root / "locks"

    # -- names ---------------------------------------------------------------------------------

    @staticmethod
    def thumbnail_name(sha256: str) -> str:
        return f"thumbs/{sha256[:2]}/{sha256}.webp"

    @staticmethod
    def original_name(sha256: str, image_format: str) -> str:
        return f"originals/{sha256[:2]}/{sha256}.{EXTENSIONS.get(image_format.upper(), 'bin')}"

    def resolve(self, name: str) -> Path:
        """The file a stored relative name refers to; names may not leave the data directory."""
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"{name!r} is outside the data directory")
        return path

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
        if not target.exists():
            self.write_atomic(target, make_thumbnail(image, longest=longest, quality=quality))
        return name

    def has(self, name: str) -> bool:
        return (self.root / name).exists()

    def put_files(self, files: Sequence[tuple[str, bytes]]) -> None:
        """Write several files (relative names), each whole or absent, with two flushes in all.

        ``write_atomic`` flushes twice per file, which caps a fast ingest at a few thousand
        thumbnails a second. Here every file is first written to a temporary name (``stage``),
        then ``commit`` makes them durable together. Files that already exist are left alone.
        """
        staged: list[tuple[Path, Path]] = []
        try:
            for name, data in files:
                entry = self.stage(name, data)
                if entry is not None:
                    staged.append(entry)
        except BaseException:
            self.discard(staged)
            raise
        self.commit(staged)

    def stage(self, name: str, data: bytes) -> tuple[Path, Path] | None:
        """Write ``data`` to a temporary file for ``name``: (temporary, target), or None when
        ``name`` is already stored. Safe to call from many threads."""
        target = self.root / name
        if target.exists():
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.temp_dir / f"{target.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
        try:
            temporary.write_bytes(data)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return temporary, target

    def commit(self, staged: Sequence[tuple[Path, Path]], pool: Executor | None = None) -> None:
        """Flush the staged contents, rename them into place, flush the names.

        A crash leaves temporaries (swept later) or whole files, never a named partial one.
        ``pool`` runs the renames side by side (on some disks each costs a millisecond).
        """
        if not staged:
            return
        try:
            flush_files(self.root, [temporary for temporary, _ in staged])
            if pool is None:
                for entry in staged:
                    _rename_into_place(entry)
            else:
                list(pool.map(_rename_into_place, staged))
        except BaseException:
            self.discard(staged)
            raise
        flush_directories(self.root, {target.parent for _, target in staged})

    @staticmethod
    def discard(staged: Sequence[tuple[Path, Path]]) -> None:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)

    def put_original(self, sha256: str, image_format: str, data: bytes) -> str:
        name = self.original_name(sha256, image_format)
        target = self.root / name
        if not target.exists():
            self.write_atomic(target, data)
        return name

    def write_atomic(self, target: Path, data: bytes) -> None:
        """Write, fsync, rename into place, fsync the folder: the file is whole or absent."""
        target.parent.mkdir(parents=True, exist_ok=True)
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.temp_dir / f"{target.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        fsync_directory(target.parent)

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


def _rename_into_place(entry: tuple[Path, Path]) -> None:
    os.replace(*entry)
