"""The service's settings, read from VIZDEX_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from vizdex.core.errors import InvalidInputError
from vizdex.web.auth import Access, KeyRing
from vizdex.web.settings import AuthSettings, LimitSettings, ServiceSettings


def test_from_env_composes_every_part(tmp_path: Path) -> None:
    env = {
        "VIZDEX_DATA_DIR": str(tmp_path),
        "VIZDEX_PORT": "9001",
        "VIZDEX_ADMIN_KEYS": "a1, a2",
        "VIZDEX_READ_KEYS": "r1",
        "VIZDEX_CORS_ORIGINS": "https://x.example,https://y.example",
        "VIZDEX_MAX_JSON_BYTES": "1000",
        "VIZDEX_MAX_UPLOAD_BYTES": "5000",
        "VIZDEX_MAX_BATCH": "8",
        "VIZDEX_QUEUE_SIZE": "64",
        "VIZDEX_UPLOAD_SYNC_IMAGES": "2",
    }
    settings = ServiceSettings.from_env(env)
    assert settings.port == 9001 and settings.data_dir == tmp_path
    assert settings.auth == AuthSettings(admin_keys=("a1", "a2"), read_keys=("r1",))
    assert settings.cors_origins == ("https://x.example", "https://y.example")
    assert (settings.limits.json_bytes, settings.limits.upload_bytes) == (1000, 5000)
    assert settings.limits.upload_sync_images == 2
    assert (settings.batching.max_batch, settings.batching.queue_size) == (8, 64)
    assert settings.search.catalog.database_url.endswith(f"{tmp_path}/catalog.db")
    assert settings.indexer.data_dir == tmp_path


def test_defaults_are_safe() -> None:
    settings = ServiceSettings.from_env({})
    assert not settings.auth.enabled and settings.cors_origins == ()
    assert settings.limits.json_bytes == 10_000_000
    assert settings.limits.upload_bytes == 64_000_000
    assert not settings.images.allow_urls and settings.images.allowed_roots == ()


def test_bad_values_are_refused() -> None:
    with pytest.raises(InvalidInputError):
        LimitSettings(json_bytes=0)
    with pytest.raises(InvalidInputError):
        ServiceSettings.from_env({"VIZDEX_MAX_BATCH": "lots"})


def test_key_ring_roles() -> None:
    ring = KeyRing(AuthSettings(admin_keys=("same", "admin"), read_keys=("same", "read")))
    assert ring.role_of("admin") is Access.ADMIN
    assert ring.role_of("read") is Access.READ
    assert ring.role_of("same") is Access.ADMIN  # listed as both: the stronger role
    assert ring.role_of("other") is None
    assert not KeyRing(AuthSettings()).enabled
