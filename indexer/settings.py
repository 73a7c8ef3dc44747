"""Typed settings of the ingestion pipeline, read from ``VIZDEX_*`` at the entry points."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vizdex.core.env import data_dir_from_env, read_settings, setting
from vizdex.core.errors import InvalidInputError
from vizdex.encoders.settings import EncoderSettings
from vizdex.imaging import SCAN_EXTENSIONS

MAX_WORKER_LEASE_S = 86400.0  # a day: longer, a dead worker's chunk waits for ever
MAX_JOB_RETENTION_S = 100 * 365 * 86400.0  # a century: beyond, the cut-off date overflows

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
    ``device_decode_check``: before a JPEG goes to the GPU, read its data strictly on the CPU at
    the smallest DCT scale (about half a full CPU decode), so a damaged file is refused as the CPU
    path refuses it instead of being left to the device decoder (``VIZDEX_DEVICE_DECODE_CHECK``).
    ``serve_worker``: a server whose catalog is PostgreSQL queues its background jobs in the
    catalog (``vizdex worker``s run them) and, with this on, works the queue too
    (``VIZDEX_SERVE_WORKER``). ``worker_lease_s``: how long a queued chunk stays a worker's
    without a heartbeat; a dead worker's chunk is taken over after that (``VIZDEX_WORKER_LEASE_S``).
    ``gc_interval_s``: how often a server sweeps files no row references and prunes tombstones,
    0 = never (``VIZDEX_GC_INTERVAL_S``); ``gc_grace_s``: files younger than this are left for a
    later sweep, since an ingest in flight may be about to reference them (``VIZDEX_GC_GRACE_S``).
    ``job_retention_s``: finished jobs (done, failed, cancelled) older than this are deleted by
    the sweep, with their work-queue chunks; pending and running ones never
    (``VIZDEX_JOB_RETENTION_S``, 30 days; 0 deletes every finished job at the next sweep).
    ``backfill_share``: the share of the device a model back-fill may take, between 0.05 and 1;
    it sleeps after each batch so queries keep their latency (``VIZDEX_BACKFILL_SHARE``).
    """

    data_dir: Path
    extensions: tuple[str, ...] = setting("INGEST_EXTENSIONS", DEFAULT_EXTENSIONS)
    include_hidden: bool = setting("INGEST_HIDDEN", False)
    batch_size: int = setting("BATCH_SIZE", EncoderSettings.batch_size, minimum=1)
    workers: int = setting("DECODE_WORKERS", EncoderSettings.decode_workers, minimum=0)
    thumbnail_size: int = setting("THUMBNAIL_SIZE", 256)
    thumbnail_quality: int = setting("THUMBNAIL_QUALITY", 80)
    # An escape hatch should nvJPEG mishandle some files on a given driver.
    device_decode: bool = setting("DEVICE_DECODE", True)
    # Off only for trusted files on a host whose CPU limits ingest: damage then reaches nvJPEG.
    device_decode_check: bool = setting("DEVICE_DECODE_CHECK", True)
    serve_worker: bool = setting("SERVE_WORKER", True)
    worker_lease_s: float = setting("WORKER_LEASE_S", 30.0)
    gc_interval_s: float = setting("GC_INTERVAL_S", 3600.0, minimum=0.0)
    gc_grace_s: float = setting("GC_GRACE_S", 600.0, minimum=0.0)
    job_retention_s: float = setting("JOB_RETENTION_S", 30 * 86400.0, minimum=0.0)
    backfill_share: float = setting("BACKFILL_SHARE", 0.5, minimum=0.05)

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
        # Finite and bounded: the lease end is the database's clock plus this (inf, NaN or a
        # century overflow it, and a worker would log that on every claim instead of working).
        if not 0 < self.worker_lease_s <= MAX_WORKER_LEASE_S:
            raise InvalidInputError(
                f"worker lease must be more than 0 and at most {MAX_WORKER_LEASE_S:g} seconds, "
                f"got {self.worker_lease_s}"
            )
        if not 0 <= self.job_retention_s <= MAX_JOB_RETENTION_S:
            raise InvalidInputError(
                f"job retention must be between 0 and {MAX_JOB_RETENTION_S:g} seconds, "
                f"got {self.job_retention_s}"
            )
        if not 0.05 <= self.backfill_share <= 1.0:
            raise InvalidInputError(
                f"back-fill share must be between 0.05 and 1, got {self.backfill_share}"
            )
        if not 1 <= self.thumbnail_quality <= 100:
            raise InvalidInputError(
                f"thumbnail quality must be between 1 and 100, got {self.thumbnail_quality}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> IndexerSettings:
        return read_settings(cls, env, data_dir=data_dir_from_env(env))
