"""Typed settings of the ingestion pipeline, read from ``VIZDEX_*`` at the entry points."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vizdex.core.env import env_bool, env_int, env_list, env_str
from vizdex.core.errors import InvalidInputError
from vizdex.imaging import SCAN_EXTENSIONS

DEFAULT_DATA_DIR = "./vizdex-data"  # the same default as search.settings
DEFAULT_EXTENSIONS: tuple[str, ...] = SCAN_EXTENSIONS


@dataclass(frozen=True)
class IndexerSettings:
    """Where ingestion writes its files and how it scans and batches.

    ``data_dir``: thumbnails, uploaded originals, job locks (``VIZDEX_DATA_DIR``; the catalog and
    indexes live there too by default). ``extensions``: file endings a folder scan picks up,
    case-insensitive (``VIZDEX_INGEST_EXTENSIONS``); files named explicitly are always tried.
    ``include_hidden``: also scan dot-files and dot-folders (``VIZDEX_INGEST_HIDDEN``).
    ``batch_size`` / ``workers``: images per encode batch and decode threads, 0 = one per core
    (``VIZDEX_BATCH_SIZE`` / ``VIZDEX_DECODE_WORKERS``, shared with the encoders).
    ``thumbnail_size`` / ``thumbnail_quality``: longest side and WebP quality of the thumbnails
    (``VIZDEX_THUMBNAIL_SIZE`` / ``VIZDEX_THUMBNAIL_QUALITY``).
    ``device_decode``: decode JPEGs on the GPU when every model runs there.
    """

    data_dir: Path
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    include_hidden: bool = False
    batch_size: int = 64
    workers: int = 0
    thumbnail_size: int = 256
    thumbnail_quality: int = 80
    device_decode: bool = True

    def __post_init__(self) -> None:
        cleaned = tuple(sorted({e.strip().lower().lstrip(".") for e in self.extensions} - {""}))
        if not cleaned:
            raise InvalidInputError("at least one file extension must be scanned")
        object.__setattr__(self, "extensions", cleaned)
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if self.batch_size < 1:
            raise InvalidInputError(f"batch size must be at least 1, got {self.batch_size}")
        if self.workers < 0:
            raise InvalidInputError(f"decode workers must be >= 0, got {self.workers}")
        if not 16 <= self.thumbnail_size <= 2048:
            raise InvalidInputError(
                f"thumbnail size must be between 16 and 2048 pixels, got {self.thumbnail_size}"
            )
        if not 1 <= self.thumbnail_quality <= 100:
            raise InvalidInputError(
                f"thumbnail quality must be between 1 and 100, got {self.thumbnail_quality}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> IndexerSettings:
        default = cls(Path(DEFAULT_DATA_DIR))
        return cls(
            data_dir=Path(env_str("DATA_DIR", DEFAULT_DATA_DIR, env)),
            extensions=tuple(env_list("INGEST_EXTENSIONS", list(default.extensions), env)),
            include_hidden=env_bool("INGEST_HIDDEN", False, env),
            batch_size=max(1, env_int("BATCH_SIZE", default.batch_size, env)),
            workers=max(0, env_int("DECODE_WORKERS", 0, env)),
            thumbnail_size=env_int("THUMBNAIL_SIZE", default.thumbnail_size, env),
            thumbnail_quality=env_int("THUMBNAIL_QUALITY", default.thumbnail_quality, env),
            # An escape hatch should nvJPEG mishandle some files on a given driver.
            device_decode=env_bool("DEVICE_DECODE", True, env),
        )
