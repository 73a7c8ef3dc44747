"""Shared, generic fixtures: a data directory, settings rooted in it, a catalog, seeded data."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vizdex.search.catalog import Catalog
from vizdex.search.records import NewImage
from vizdex.search.settings import CatalogSettings, SearchSettings, default_database_url

# Encoder fixtures (tiny checkpoints, loaded encoders) and the PostgreSQL server the suite starts
# itself live in their own modules.
pytest_plugins = ("tests.support.model_fixtures", "tests.support.postgres")

# The suite's exact-parity checks are written for float32, and `auto` means bfloat16 on CPUs
# with AMX or AVX512-BF16: pin float32 for commands and servers the tests start, so that results
# do not depend on the CPU. tests/unit/test_precision*.py choose their precisions explicitly.
os.environ.setdefault("VIZDEX_DTYPE", "float32")

UnitVectors = Callable[[int, int], np.ndarray]
ImageFactory = Callable[..., NewImage]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "vizdex-data"


@pytest.fixture
def database_url(data_dir: Path) -> str:
    """The catalog's URL: SQLite in the data directory. A module whose tests must hold on both
    databases overrides this fixture with one parametrised over ``tests.support.postgres``'s
    ``DATABASES`` (see ``database_url_for`` there)."""
    return default_database_url(data_dir)


@pytest.fixture
def search_settings(data_dir: Path, database_url: str) -> SearchSettings:
    settings = SearchSettings.for_data_dir(data_dir)
    return replace(settings, catalog=CatalogSettings(database_url))


@pytest.fixture
def catalog(search_settings: SearchSettings) -> Iterator[Catalog]:
    opened = Catalog.open(search_settings.catalog)
    yield opened
    opened.close()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240607)


@pytest.fixture
def unit_vectors(rng: np.random.Generator) -> UnitVectors:
    """``unit_vectors(n, dim)``: seeded random float32 rows of length 1."""

    def make(count: int, dim: int) -> np.ndarray:
        vectors = rng.standard_normal((count, dim)).astype(np.float32)
        return np.asarray(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), np.float32)

    return make


@pytest.fixture
def new_image() -> ImageFactory:
    """``new_image(key, vectors, **fields)``: a NewImage whose sha256 is derived from ``key``."""

    def make(key: object, vectors: Mapping[str, np.ndarray], **fields: Any) -> NewImage:
        defaults: dict[str, Any] = {"width": 64, "height": 48, "format": "png", "byte_size": 1234}
        defaults.update(fields)
        sha = hashlib.sha256(repr(key).encode()).hexdigest()
        return NewImage(sha256=sha, vectors=dict(vectors), **defaults)

    return make
