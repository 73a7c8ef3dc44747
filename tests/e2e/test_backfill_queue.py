"""A model back-fill accepted by a replica on PostgreSQL goes through the work queue: the replica
dies holding it, and a `vizdex worker` on another "machine" (a subprocess) takes it over once the
lease has run out and finishes it from the catalog: every image gets the model's vector exactly
once, the job ends done with exact counts, the model turns ready.

Real PostgreSQL (tests/support/postgres.py), the real worker command line, tiny random checkpoints.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL.Image import Image

from tests.support.ingest_helpers import all_images, offline_env, photo_folder
from vizdex.encoders.base import Encoder
from vizdex.encoders.streaming import draft_side
from vizdex.imaging import ImageInputSettings, decode_image_bytes
from vizdex.indexer import Indexer, IndexerSettings, IngestRequest, ModelChanges
from vizdex.search import (
    CatalogSettings,
    ImageRecord,
    JobState,
    ModelState,
    SearchService,
    SearchSettings,
)

REPO = Path(__file__).parents[2]
PHOTOS = 8
DONE_BY_THE_DEAD = 3  # vectors the dying replica committed before it stopped


def _pictures(images: list[ImageRecord], encoder: Encoder) -> list[Image]:
    """The images as a back-fill decodes them (at the model's draft scale)."""
    side = draft_side([encoder])
    return [
        decode_image_bytes(
            Path(str(image.source_uri)).read_bytes(), ImageInputSettings(), min_side=side
        ).image
        for image in images
    ]


def test_a_backfill_whose_replica_died_is_finished_by_a_worker_exactly_once(
    tmp_path: Path, postgres_url: str, clip_encoder: Encoder, dino_encoder: Encoder
) -> None:
    clip, dino = clip_encoder.name, dino_encoder.name
    photos = tmp_path / "photos"
    photo_folder(photos, PHOTOS)
    data = tmp_path / "data"
    settings = replace(SearchSettings.for_data_dir(data), catalog=CatalogSettings(postgres_url))
    encoders = {clip: clip_encoder, dino: dino_encoder}
    replica = SearchService.open(settings, encoders)
    indexer = Indexer(
        replica.catalog,
        replica.indexes,
        encoders,
        IndexerSettings(data_dir=data, batch_size=2, backfill_share=1.0),
        ImageInputSettings(),
        queue=True,  # as a server on PostgreSQL: background jobs go to the work queue
    )
    catalog = replica.catalog
    try:
        replica.create_collection("c", [clip])
        indexer.ingest("c", IngestRequest(paths=(str(photos),)))
        changes = ModelChanges(replica, indexer)
        _, job = changes.add_model("c", dino)  # what POST /v1/collections/c/models does
        record = catalog.get_collection("c")
        assert (job.kind, job.state, job.total) == ("backfill", JobState.PENDING, PHOTOS)
        assert record.state_of(dino) is ModelState.BACKFILLING
        # Accepted twice (another replica, a restart's resume): still one job.
        assert indexer.backfill("c", dino).id == job.id
        assert [
            j.id for j in catalog.list_jobs(collection_id=record.id) if j.kind == "backfill"
        ] == [job.id]

        # The replica's worker claims the back-fill, commits a few vectors, and dies: no more
        # heartbeats, its lease runs out (0 s: at once).
        claimed = catalog.claim_work("dead-replica", lease_s=0)
        assert claimed is not None and claimed.job_id == job.id
        images = sorted(all_images(catalog, record.id), key=lambda image: image.id)
        first = images[:DONE_BY_THE_DEAD]
        catalog.put_embeddings(
            record.id,
            dino,
            [image.id for image in first],
            dino_encoder.encode_images(_pictures(first, dino_encoder)),
            precision=dino_encoder.precision,
        )
        assert catalog.record_item_progress(claimed.id, "dead-replica", done=DONE_BY_THE_DEAD)

        worker = subprocess.run(
            [
                sys.executable,
                "-m",
                "vizdex",
                "worker",
                "--until-idle",
                "--name",
                "survivor",
                "--model",
                clip,
                "--model",
                dino,
                "--device",
                "cpu",
                "--dtype",
                "float32",
                "--batch-size",
                "2",
            ],
            cwd=REPO,
            env=offline_env(tmp_path, VIZDEX_DATABASE_URL=postgres_url, VIZDEX_DATA_DIR=str(data)),
            capture_output=True,
            timeout=300,
        )
        log = worker.stderr.decode()[-3000:]
        assert worker.returncode == 0, log
        assert "resumes chunk 0 of job" in log  # taken over, not run afresh

        ended = catalog.get_job(job.id)
        assert ended.state is JobState.DONE, (ended, log)
        # The dead replica's share counted as found done; the survivor embedded the rest.
        assert (ended.total, ended.done, ended.skipped, ended.failed) == (
            PHOTOS,
            PHOTOS - DONE_BY_THE_DEAD,
            DONE_BY_THE_DEAD,
            0,
        )
        record = catalog.get_collection("c")
        assert record.state_of(dino) is ModelState.READY
        assert catalog.model_coverage(record.id) == {clip: PHOTOS, dino: PHOTOS}
        # Exactly once: no vector was replaced (a replaced one leaves a tombstone).
        assert catalog.row_counts()["embedding_tombstones"] == 0
        assert catalog.row_counts()["work_items"] == 1
        # Each vector is the model's for its own image, as a back-fill here would compute it.
        ids = [image.id for image in images]
        _, vectors = catalog.get_vectors(record.id, dino, ids)
        expected = dino_encoder.encode_images(_pictures(images, dino_encoder))
        cosine = np.sum(vectors * expected, axis=1) / (
            np.linalg.norm(vectors, axis=1) * np.linalg.norm(expected, axis=1)
        )
        assert cosine.min() >= 0.9999
    finally:
        indexer.close()
        replica.close()
