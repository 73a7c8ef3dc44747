"""The service's settings: each package's own, composed here from ``VIZDEX_*`` variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from vizdex.core.env import DEFAULT_DATA_DIR, read_settings, setting
from vizdex.core.errors import InvalidInputError
from vizdex.encoders.settings import BatchSettings, EncoderSettings
from vizdex.imaging.settings import ImageInputSettings
from vizdex.indexer import IndexerSettings
from vizdex.search.settings import SearchSettings


@dataclass(frozen=True)
class LimitSettings:
    """Request body limits per kind of route, and items per request.

    ``json_bytes``: JSON bodies (``VIZDEX_MAX_JSON_BYTES``, 10 MB); ``upload_bytes``: multipart
    uploads (``VIZDEX_MAX_UPLOAD_BYTES``, 64 MB); ``batch_items``: images in one
    ``/v1/vision/batch`` request (``VIZDEX_MAX_BATCH_ITEMS``); ``upload_files``: file parts in
    one multipart request; ``connections``: open connections ``vizdex serve`` accepts before
    answering 503 (``VIZDEX_MAX_CONNECTIONS``), which bounds the request bodies held at once.
    Uploads of at most ``upload_sync_images`` images and ``upload_sync_bytes`` bytes are indexed
    before the answer (``VIZDEX_UPLOAD_SYNC_IMAGES``); larger ones become a background job, and at
    most ``pending_jobs`` may wait (``VIZDEX_MAX_PENDING_JOBS``; beyond that, 429). A duplicate
    scan of a collection with at most ``duplicates_sync_images`` vectors answers at once
    (``VIZDEX_DUPLICATES_SYNC_IMAGES``); a larger collection's becomes a background job.
    """

    json_bytes: int = setting("MAX_JSON_BYTES", 10_000_000)
    upload_bytes: int = setting("MAX_UPLOAD_BYTES", 64_000_000)
    batch_items: int = setting("MAX_BATCH_ITEMS", 4096)
    upload_files: int = 1000
    connections: int = setting("MAX_CONNECTIONS", 1000)
    upload_sync_images: int = setting("UPLOAD_SYNC_IMAGES", 16)
    upload_sync_bytes: int = 16_000_000
    pending_jobs: int = setting("MAX_PENDING_JOBS", 4)
    duplicates_sync_images: int = setting("DUPLICATES_SYNC_IMAGES", 20_000, minimum=0)

    def __post_init__(self) -> None:
        for name in (
            "json_bytes",
            "upload_bytes",
            "batch_items",
            "upload_files",
            "connections",
            "pending_jobs",
        ):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"limit {name} must be at least 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LimitSettings:
        return read_settings(cls, env)


@dataclass(frozen=True)
class AuthSettings:
    """API keys. No keys: the API is open. Any key configured: every ``/v1`` route needs one;
    admin keys may do everything, read keys only encode, search and read
    (``VIZDEX_ADMIN_KEYS``, ``VIZDEX_READ_KEYS``, comma-separated)."""

    admin_keys: tuple[str, ...] = setting("ADMIN_KEYS", ())
    read_keys: tuple[str, ...] = setting("READ_KEYS", ())

    @property
    def enabled(self) -> bool:
        return bool(self.admin_keys or self.read_keys)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AuthSettings:
        return read_settings(cls, env)


@dataclass(frozen=True)
class ServiceSettings:
    host: str = setting("HOST", "127.0.0.1")
    port: int = setting("PORT", 8000)
    data_dir: Path = setting("DATA_DIR", Path(DEFAULT_DATA_DIR))
    encoders: EncoderSettings = field(default_factory=EncoderSettings)
    images: ImageInputSettings = field(default_factory=ImageInputSettings)
    search: SearchSettings = field(
        default_factory=lambda: SearchSettings.for_data_dir(Path(DEFAULT_DATA_DIR))
    )
    indexer: IndexerSettings = field(
        default_factory=lambda: IndexerSettings(data_dir=Path(DEFAULT_DATA_DIR))
    )
    batching: BatchSettings = field(default_factory=BatchSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    cors_origins: tuple[str, ...] = setting("CORS_ORIGINS", ())  # empty: no CORS headers at all

    @classmethod
    def for_data_dir(cls, data_dir: Path, **overrides: object) -> ServiceSettings:
        """Defaults rooted at one directory (tests, scripts)."""
        base = cls(
            data_dir=data_dir,
            search=SearchSettings.for_data_dir(data_dir),
            indexer=IndexerSettings(data_dir=data_dir),
        )
        return replace(base, **overrides)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServiceSettings:
        return read_settings(
            cls,
            env,
            encoders=EncoderSettings.from_env(env),
            images=ImageInputSettings.from_env(env),
            search=SearchSettings.from_env(env),
            indexer=IndexerSettings.from_env(env),
            batching=BatchSettings.from_env(env),
            limits=LimitSettings.from_env(env),
            auth=AuthSettings.from_env(env),
        )
