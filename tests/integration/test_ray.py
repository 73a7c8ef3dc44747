"""A model back-fill and a first ingest on a local Ray cluster (``ray.init(num_cpus=2)``, CPU,
tiny models): Ray Data decodes, an actor pool encodes, the driver writes through the catalog. The
vectors equal a local ingest's; a file that cannot be read fails alone; the overhead against the
local run on the same files is measured once and printed (no pass/fail on timing). A driver
killed mid-ingest: tests/e2e/test_ray_driver_killed.py.

Skipped where the ``ray`` package is not installed (``pip install 'vizdex[ray]'``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support.ingest_helpers import all_images, photo_folder
from vizdex.encoders.base import Encoder
from vizdex.imaging import ImageInputSettings
from vizdex.indexer import Indexer, IndexerSettings, IngestRequest, ModelChanges
from vizdex.search import Catalog, JobState, ModelState, SearchService, SearchSettings

ray = pytest.importorskip("ray")

from tests.support.local_ray import start_local_ray  # noqa: E402 (needs Ray, checked above)

PHOTOS = 12


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    start_local_ray()
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


def _by_content(catalog: Catalog, collection_id: int) -> dict[str, tuple[int, str | None]]:
    return {
        image.sha256: (image.id, image.source_uri) for image in all_images(catalog, collection_id)
    }


def test_a_first_ingest_on_ray_equals_a_local_one_and_fails_per_file(
    cluster: None, tmp_path: Path, clip_encoder: Encoder, dino_encoder: Encoder
) -> None:
    clip, dino = clip_encoder.name, dino_encoder.name
    photos = tmp_path / "photos"
    files = photo_folder(photos, PHOTOS, per_folder=5)
    (photos / "copy.jpg").write_bytes(files[0].read_bytes())  # the same content twice
    (photos / "broken.jpg").write_bytes(files[1].read_bytes()[:300])  # no longer decodes
    data = tmp_path / "data"
    encoders = {clip: clip_encoder, dino: dino_encoder}
    search = SearchService.open(SearchSettings.for_data_dir(data), encoders)
    settings = IndexerSettings(data_dir=data, batch_size=4)
    indexer = Indexer(search.catalog, search.indexes, encoders, settings, ImageInputSettings())
    request = IngestRequest(paths=(str(photos),))
    try:
        reports = {}
        elapsed = {}
        for name, ray_address in (("local", None), ("ray", "auto")):
            search.create_collection(name, [clip, dino])
            started = time.perf_counter()
            reports[name] = indexer.ingest(name, request, ray_address=ray_address)
            elapsed[name] = time.perf_counter() - started
        local, on_ray = reports["local"], reports["ray"]
        assert on_ray.state is JobState.DONE, on_ray.error
        counts = ("total", "indexed", "duplicates", "failed")
        assert [getattr(on_ray, c) for c in counts] == [PHOTOS + 2, PHOTOS, 1, 1]
        assert [getattr(local, c) for c in counts] == [getattr(on_ray, c) for c in counts]
        assert [(f.item, f.code) for f in on_ray.failures] == [
            (str(photos / "broken.jpg"), "corrupt")
        ]

        catalog = search.catalog
        mine = catalog.get_collection("ray")
        theirs = catalog.get_collection("local")
        ray_rows, local_rows = _by_content(catalog, mine.id), _by_content(catalog, theirs.id)
        assert sorted(ray_rows) == sorted(local_rows) and len(ray_rows) == PHOTOS
        # The same files recorded at the same paths, each with its thumbnail.
        assert {uri for _, uri in ray_rows.values()} == {uri for _, uri in local_rows.values()}
        for image in all_images(catalog, mine.id):
            thumbnail = indexer.store.thumbnail_file(image)
            assert thumbnail is not None and thumbnail.is_file()
        shas = sorted(ray_rows)
        for model in (clip, dino):
            _, ours = catalog.get_vectors(mine.id, model, [ray_rows[s][0] for s in shas])
            _, reference = catalog.get_vectors(theirs.id, model, [local_rows[s][0] for s in shas])
            assert _cosine(ours, reference).min() >= 0.9999, model
        # The index answers from them: each photo finds itself first.
        hits = search.search_vector("ray", ours[0], model=dino).hits
        assert hits[0].image.id == ray_rows[shas[0]][0]

        # Run again: nothing is read or embedded twice.
        again = indexer.ingest("ray", request, ray_address="auto")
        assert (again.indexed, again.unchanged, again.failed) == (0, PHOTOS, 1)
        assert catalog.count_images(mine.id) == PHOTOS
        print(
            f"\ningest of {PHOTOS + 2} files, 2 models: local {elapsed['local']:.2f} s, "
            f"Ray {elapsed['ray']:.2f} s, overhead ratio {elapsed['ray'] / elapsed['local']:.1f}"
        )
    finally:
        indexer.close()
        search.close()
