"""A collection records the precision of its vectors; a write that may not mix is refused.

Through the catalog itself, an ingestion job, and the HTTP API: float32 and bfloat16 share a
collection (their vectors are within the documented cosine tolerance), int8 joins neither.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ImageFactory, UnitVectors
from tests.support.api_helpers import api_client, api_settings, photo_jpeg
from tests.support.ingest_helpers import photo_folder
from vizdex.core.precision import MIX_TOLERANCE, Precision
from vizdex.encoders.base import Encoder
from vizdex.encoders.loading import load_encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.indexer import Indexer, IndexerSettings, IngestRequest, QueueWorker, WorkerOptions
from vizdex.search import Catalog, IndexStore, JobState, PrecisionMismatchError, SearchSettings

F32, BF16, INT8 = Precision.FLOAT32, Precision.BFLOAT16, Precision.INT8


@functools.cache
def _clip(model_dir: Path, dtype: str) -> Encoder:
    settings = EncoderSettings(models=(str(model_dir),), device="cpu", dtype=dtype, batch_size=8)
    return load_encoder(str(model_dir), settings)


def _add(
    catalog: Catalog,
    collection_id: int,
    new_image: ImageFactory,
    unit_vectors: UnitVectors,
    key: str,
    precision: Precision | None,
) -> None:
    image = new_image(key, {"clip": unit_vectors(1, 8)[0]})
    precisions = None if precision is None else {"clip": precision}
    catalog.add_images(collection_id, [image], precisions=precisions)


def test_the_catalog_records_precisions_and_refuses_what_cannot_mix(
    catalog: Catalog, new_image: ImageFactory, unit_vectors: UnitVectors
) -> None:
    collection = catalog.create_collection("photos", ["clip"])
    assert catalog.get_collection("photos").precisions == {}
    add: Callable[[str, Precision | None], None] = functools.partial(
        _add, catalog, collection.id, new_image, unit_vectors
    )
    add("given", None)  # vectors from a caller: no precision to record
    assert catalog.get_collection("photos").precisions == {}
    add("a", F32)
    add("b", BF16)
    add("c", F32)
    assert catalog.get_collection("photos").precisions == {"clip": ("float32", "bfloat16")}
    seq = catalog.collection_seq(collection.id)

    with pytest.raises(PrecisionMismatchError) as refused:
        add("d", INT8)
    error = refused.value
    assert error.code == "precision_mismatch"
    assert error.details == {
        "model": "clip",
        "recorded": ["float32", "bfloat16"],
        "precision": "int8",
    }
    assert "float32, bfloat16" in error.message and str(MIX_TOLERANCE) in error.message
    # Nothing of the refused write was stored.
    assert catalog.count_images(collection.id) == 4
    assert catalog.collection_seq(collection.id) == seq
    with pytest.raises(PrecisionMismatchError):
        catalog.check_precisions(collection.id, {"clip": INT8})
    catalog.check_precisions(collection.id, {"clip": Precision.FLOAT16})


def test_a_model_whose_vectors_are_all_gone_starts_afresh(
    catalog: Catalog, new_image: ImageFactory, unit_vectors: UnitVectors
) -> None:
    collection = catalog.create_collection("photos", ["clip"])
    _add(catalog, collection.id, new_image, unit_vectors, "a", INT8)
    with pytest.raises(PrecisionMismatchError):
        _add(catalog, collection.id, new_image, unit_vectors, "b", F32)
    ids = [image.id for image in catalog.list_images(collection.id, after_id=0, limit=10)]
    catalog.delete_images(collection.id, ids)
    _add(catalog, collection.id, new_image, unit_vectors, "b", F32)
    assert catalog.get_collection("photos").precisions == {"clip": ("float32",)}


def test_ingestion_records_its_precision_and_refuses_int8_before_a_job(
    tmp_path: Path,
    data_dir: Path,
    search_settings: SearchSettings,
    catalog: Catalog,
    tiny_clip_dir: Path,
) -> None:
    name = str(tiny_clip_dir)
    photos = tmp_path / "photos"
    photo_folder(photos, 3)
    collection = catalog.create_collection("photos", [name])
    indexes = IndexStore(catalog, search_settings.index)
    settings = IndexerSettings(data_dir=data_dir, batch_size=4, workers=1)
    try:
        for dtype in ("float32", "bfloat16"):
            indexer = Indexer(catalog, indexes, {name: _clip(tiny_clip_dir, dtype)}, settings)
            photo_folder(photos / dtype, 2, seed=10 if dtype == "float32" else 20)
            report = indexer.ingest("photos", IngestRequest(paths=(str(photos),)))
            assert report.failed == 0 and report.indexed > 0
            indexer.close()
        assert catalog.get_collection("photos").precisions == {name: ("float32", "bfloat16")}
        jobs = len(catalog.list_jobs(collection_id=collection.id))

        int8 = Indexer(catalog, indexes, {name: _clip(tiny_clip_dir, "int8")}, settings)
        photo_folder(photos / "int8", 2, seed=30)
        with pytest.raises(PrecisionMismatchError, match="VIZDEX_DTYPE=float32"):
            int8.ingest("photos", IngestRequest(paths=(str(photos),)))
        assert (
            len(catalog.list_jobs(collection_id=collection.id)) == jobs
        )  # refused before a job existed
        assert catalog.count_images(collection.id) == 7

        # A queue worker in int8 fails its chunk with the same reason, storing nothing.
        queued = int8.enqueue("photos", IngestRequest(paths=(str(photos / "int8"),)))
        worker = QueueWorker(catalog, int8.run_chunk, int8.store, WorkerOptions(poll_s=0.05))
        worker.run(threading.Event(), until_idle=True)
        failed = catalog.get_job(queued.id)
        assert failed.state is JobState.FAILED and "VIZDEX_DTYPE=float32" in (failed.error or "")
        assert catalog.count_images(collection.id) == 7
        int8.close()
    finally:
        indexes.close()


def test_the_api_reports_precisions_and_answers_409_to_a_mix(
    tmp_path: Path, tiny_clip_dir: Path
) -> None:
    name = str(tiny_clip_dir)
    settings = api_settings(
        tmp_path / "data", EncoderSettings(models=(name,), device="cpu", dtype="bfloat16")
    )
    upload = [("files", (f"p{seed}.jpg", photo_jpeg(seed), "image/jpeg")) for seed in (1, 2)]
    with api_client(settings, {name: _clip(tiny_clip_dir, "bfloat16")}) as client:
        (model,) = client.get("/v1/models").json()["models"]
        assert (model["dtype"], model["precision"]) == ("bfloat16", "bfloat16")
        assert client.post("/v1/collections", json={"name": "mixed"}).status_code == 201
        assert client.post("/v1/collections/mixed/images", files=upload).status_code == 201
        shown = client.get("/v1/collections/mixed").json()
        assert shown["precisions"] == {name: ["bfloat16"]}

    with api_client(settings, {name: _clip(tiny_clip_dir, "int8")}) as client:
        (model,) = client.get("/v1/models").json()["models"]
        assert (model["dtype"], model["precision"]) == ("float32", "int8")
        more = [("files", ("p3.jpg", photo_jpeg(3), "image/jpeg"))]
        refused = client.post("/v1/collections/mixed/images", files=more)
        assert refused.status_code == 409, refused.text
        body = refused.json()
        assert body["code"] == "precision_mismatch" and "bfloat16" in body["detail"]
        assert client.get("/v1/collections/mixed").json()["image_count"] == 2
