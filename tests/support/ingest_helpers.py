"""Shared pieces of the ingestion tests: photo folders and catalog/index consistency checks."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.support.synthetic_photos import jpeg_bytes, make_photo
from vizdex.encoders.base import Encoder
from vizdex.indexer import Indexer, IndexerSettings
from vizdex.search import Catalog, CollectionRecord, ImageRecord, IndexStore, SearchSettings


def write_photo(path: Path, seed: int, size: tuple[int, int] = (320, 240)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(make_photo(*size, seed=seed)))
    return path


def photo_folder(
    root: Path,
    count: int,
    *,
    seed: int = 0,
    per_folder: int = 4,
    size: tuple[int, int] = (320, 240),
) -> list[Path]:
    """``count`` distinct photos spread over nested folders (``a/``, ``a/b/``, ...), at most
    ten deep (so ``count <= 10 * per_folder``)."""
    files = []
    for index in range(count):
        depth = index // per_folder
        folder = root.joinpath(*["abcdefghij"[level] for level in range(depth)])
        files.append(write_photo(folder / f"photo-{index:03d}.jpg", seed + index, size))
    return files


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def all_images(catalog: Catalog, collection_id: int) -> list[ImageRecord]:
    images: list[ImageRecord] = []
    after = 0
    while page := catalog.list_images(collection_id, after_id=after, limit=500):
        images.extend(page)
        after = page[-1].id
    return images


def assert_index_matches_catalog(
    catalog: Catalog, indexes: IndexStore, collection: CollectionRecord
) -> list[int]:
    """Every model's index holds exactly the catalog's image ids, each once; returns the ids."""
    ids = sorted(image.id for image in all_images(catalog, collection.id))
    for model in collection.models:
        indexed = indexes.ids(collection, model)
        assert len(indexed) == len(set(indexed.tolist())), f"{model}: an id is indexed twice"
        assert sorted(indexed.tolist()) == ids, model
        stored, _ = catalog.get_vectors(collection.id, model, ids)
        assert sorted(stored.tolist()) == ids, f"{model}: an image has no vector"
    return ids


@dataclass
class Harness:
    """A catalog with one two-model collection, its indexes and an indexer, in one data dir."""

    catalog: Catalog
    indexes: IndexStore
    indexer: Indexer
    collection: CollectionRecord
    settings: IndexerSettings
    encoders: Mapping[str, Encoder]

    def refresh(self) -> CollectionRecord:
        self.collection = self.catalog.get_collection(self.collection.name)
        return self.collection

    def seq(self) -> int:
        return self.catalog.collection_seq(self.collection.id)

    def images(self) -> list[ImageRecord]:
        return all_images(self.catalog, self.collection.id)

    def by_path(self) -> dict[str, ImageRecord]:
        return {image.source_uri or "": image for image in self.images()}

    def check(self) -> list[int]:
        return assert_index_matches_catalog(self.catalog, self.indexes, self.refresh())

    def vectors(self, model: str, ids: list[int]) -> np.ndarray:
        _, vectors = self.catalog.get_vectors(self.collection.id, model, ids)
        return vectors


@pytest.fixture
def harness(
    data_dir: Path,
    search_settings: SearchSettings,
    catalog: Catalog,
    clip_encoder: Encoder,
    dino_encoder: Encoder,
) -> Iterator[Harness]:
    encoders = {clip_encoder.name: clip_encoder, dino_encoder.name: dino_encoder}
    collection = catalog.create_collection("photos", list(encoders))
    indexes = IndexStore(catalog, search_settings.index)
    settings = IndexerSettings(data_dir=data_dir, batch_size=4, workers=2)
    indexer = Indexer(catalog, indexes, encoders, settings, job_flush_s=0.0)
    yield Harness(catalog, indexes, indexer, collection, settings, encoders)
    indexer.close()
    indexes.close()


def set_mtime(path: Path, mtime_ns: int) -> None:
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, mtime_ns))
