"""A model back-fill on a local Ray cluster (``ray.init(num_cpus=2)``, CPU, tiny models): Ray
Data decodes, an actor pool encodes, the driver writes through the catalog. The vectors equal a
local ingest's; a file that cannot be read fails alone; the overhead against the local back-fill
on the same files is measured once and printed (no pass/fail on timing).

Skipped where the ``ray`` package is not installed (``pip install 'vizdex[ray]'``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support.ingest_helpers import photo_folder
from vizdex.encoders.base import Encoder
from vizdex.imaging import ImageInputSettings
from vizdex.indexer import Indexer, IndexerSettings, IngestRequest, ModelChanges
from vizdex.search import JobState, ModelState, SearchService, SearchSettings

ray = pytest.importorskip("ray")

PHOTOS = 12


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_a_backfill_on_ray_equals_an_ingest_and_fails_per_file(
    cluster: None, tmp_path: Path, clip_encoder: Encoder, dino_encoder: Encoder
) -> None:
    clip, dino = clip_encoder.name, dino_encoder.name
    photos = tmp_path / "photos"
    files = photo_folder(photos, PHOTOS, per_folder=6)
    data = tmp_path / "data"
    search = SearchService.open(
        SearchSettings.for_data_dir(data), {clip: clip_encoder, dino: dino_encoder}
    )
    settings = IndexerSettings(data_dir=data, batch_size=4, backfill_share=1.0)
    indexer = Indexer(
        search.catalog,
        search.indexes,
        {clip: clip_encoder, dino: dino_encoder},
        settings,
        ImageInputSettings(),
    )
    try:
        for name, models in (("ray", [clip]), ("local", [clip]), ("ref", [dino])):
            search.create_collection(name, models)
            indexer.ingest(name, IngestRequest(paths=(str(photos),)))
        changes = ModelChanges(search, indexer)

        started = time.perf_counter()
        _, local_job = changes.add_model("local", dino, background=False)
        local_s = time.perf_counter() - started
        assert local_job.state is JobState.DONE and local_job.done == PHOTOS

        broken = files[3]
        broken.write_bytes(broken.read_bytes()[:200])  # no longer decodes: fails alone
        started = time.perf_counter()
        _, job = changes.add_model("ray", dino, background=False, ray_address="auto")
        ray_s = time.perf_counter() - started
        assert job.state is JobState.DONE, job
        assert (job.total, job.done, job.failed) == (PHOTOS, PHOTOS - 1, 1)
        assert job.failures[0].code == "corrupt"
        record = search.get_collection("ray")
        assert record.state_of(dino) is ModelState.BACKFILLING  # one image still lacks it
        assert search.catalog.count_lacking(record.id, dino) == 1

        # Equal to an ingest with the model, file by file (by content).
        reference = search.get_collection("ref")
        ref_ids = search.catalog.find_by_sha256(reference.id, search.catalog.iter_sha256(record.id))
        mine = search.catalog.find_by_sha256(record.id, list(ref_ids))
        shas = sorted(ref_ids)
        ids, filled = search.catalog.get_vectors(record.id, dino, [mine[s] for s in shas])
        assert len(ids) == PHOTOS - 1
        by_id = dict(zip(ids.tolist(), filled, strict=True))
        paired = [(by_id[mine[s]], ref_ids[s]) for s in shas if mine[s] in by_id]
        _, ingested = search.catalog.get_vectors(reference.id, dino, [r for _, r in paired])
        assert _cosine(np.stack([v for v, _ in paired]), ingested).min() >= 0.9999
        print(
            f"\nback-fill of {PHOTOS} images: local {local_s:.2f} s, Ray {ray_s:.2f} s, "
            f"overhead ratio {ray_s / local_s:.1f}"
        )
    finally:
        indexer.close()
        search.close()
