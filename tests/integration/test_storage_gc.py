"""Storage that does not only grow: deletes take their files, the sweep takes what a crash left,
tombstones are pruned once every snapshot includes them, metadata keys are checked on write.

Real SQLite (and PostgreSQL where the catalog-only tests take ``database_url``), real FAISS, tiny
random CLIP, HTTP through the app.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import update

from tests.conftest import UnitVectors
from tests.support.api_helpers import (
    api_client,
    api_settings,
    photo_b64,
    photo_jpeg,
    state_of,
    upload_photos,
)
from tests.support.postgres import DATABASES, database_url_for
from vizdex.cli.main import main
from vizdex.core.errors import InvalidInputError
from vizdex.encoders.base import Encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.imaging import load_image
from vizdex.imaging.settings import ImageInputSettings
from vizdex.indexer import DataStore, IndexerSettings, StorageCollector
from vizdex.indexer.storage import RESERVE_BYTES
from vizdex.search import (
    MAX_SIMILARITY_INPUTS,
    IndexStore,
    JobState,
    ModelInUseError,
    ModelNotReadyError,
    NewImage,
    SearchService,
    SearchSettings,
    SourceKind,
)
from vizdex.search.models import Job
from vizdex.web.openapi import json_schema
from vizdex.web.routes.vision import SimilarityRequest

Client = TestClient[Litestar]
DIM = 8
# What an emptied data directory may keep beyond its first empty state: the disk reserve the first
# job sets aside (``RESERVE_BYTES``), snapshots of empty indexes, the SQLite shared-memory file,
# and the catalog's pages for the job rows it keeps.
FIXED_OVERHEAD = RESERVE_BYTES + (256 << 10)


def _files(root: Path, area: str) -> list[Path]:
    return [p for p in (root / area).rglob("*") if p.is_file()] if (root / area).exists() else []


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.fixture
def client(
    tmp_path: Path, cpu_settings: EncoderSettings, clip_encoder: Encoder
) -> Iterator[Client]:
    settings = api_settings(tmp_path / "data", replace(cpu_settings, models=(clip_encoder.name,)))
    # No periodic sweep racing the test; no grace: nothing else writes here.
    indexer = replace(settings.indexer, gc_interval_s=0.0, gc_grace_s=0.0)
    with api_client(replace(settings, indexer=indexer), {clip_encoder.name: clip_encoder}) as c:
        yield c


def _search_ids(client: Client, collection: str, seed: int) -> list[int]:
    answer = client.post(
        f"/v1/collections/{collection}/search", json={"image": photo_b64(seed), "k": 10}
    )
    assert answer.status_code == 200, answer.text
    return [int(hit["id"]) for hit in answer.json()["hits"]]


def _plain_images(vectors: np.ndarray) -> list[NewImage]:
    """One catalog row per vector of model "m", with no file behind it."""
    return [
        NewImage(
            sha256=f"{i:064x}", width=1, height=1, format="JPEG", byte_size=1, vectors={"m": v}
        )
        for i, v in enumerate(vectors)
    ]


def test_ingest_delete_everything_gc_leaves_the_data_dir_as_empty_as_it_began(
    client: Client, tmp_path: Path
) -> None:
    state = state_of(client.app)
    root = tmp_path / "data"
    for name in ("a", "b"):
        assert client.post("/v1/collections", json={"name": name}).status_code == 201
    state.storage.sweep(grace_s=0)
    state.search.catalog.vacuum()
    empty = _size(root)

    a_ids = upload_photos(client, "a", [0, 1, 2, 3, 4, 5])
    b_ids = upload_photos(client, "b", [4, 5, 6])  # 4 and 5: the same content (and files) as in "a"
    assert len(_files(root, "thumbs")) == 7 and len(_files(root, "originals")) == 7

    # An image whose content only "a" holds: its two files go with it, at once.
    assert client.delete(f"/v1/collections/a/images/{a_ids[0]}").status_code == 204
    assert len(_files(root, "thumbs")) == 6 and len(_files(root, "originals")) == 6
    # The whole of "a": the files "b" still references stay, and "b" still answers with them.
    assert client.delete("/v1/collections/a").status_code == 204
    assert len(_files(root, "thumbs")) == 3 and len(_files(root, "originals")) == 3
    assert _search_ids(client, "b", 4)[0] == b_ids[0]
    assert client.get(f"/v1/collections/b/images/{b_ids[0]}/thumbnail").status_code == 200
    assert client.get(f"/v1/collections/b/images/{b_ids[1]}/file").status_code == 200

    for image_id in b_ids:
        assert client.delete(f"/v1/collections/b/images/{image_id}").status_code == 204
    report = state.storage.sweep(grace_s=0)
    state.search.catalog.vacuum()

    assert _files(root, "thumbs") == [] and _files(root, "originals") == []
    rows = state.search.catalog.row_counts()
    assert report.rows == rows
    assert {table: rows[table] for table in ("images", "embeddings", "embedding_tombstones")} == {
        "images": 0,
        "embeddings": 0,
        "embedding_tombstones": 0,
    }
    assert report.tombstones_pruned == 3  # b's three images, one model each
    sizes = {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}
    assert _size(root) <= empty + FIXED_OVERHEAD, (sizes, empty)

    # Still right afterwards: new images are found, none of the deleted ones come back.
    fresh = upload_photos(client, "b", [7, 8])
    assert _search_ids(client, "b", 8)[0] == fresh[1]
    assert sorted(_search_ids(client, "b", 7)) == sorted(fresh)


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, data_dir: Path) -> str:
    return database_url_for(request, data_dir)


@pytest.fixture
def search(search_settings: SearchSettings) -> Iterator[SearchService]:
    service = SearchService.open(search_settings, {})
    yield service
    service.close()


def _stored_image(
    store: DataStore, seed: int, vector: np.ndarray, *, kind: SourceKind = SourceKind.UPLOAD
) -> NewImage:
    data = photo_jpeg(seed)
    decoded = load_image(data, ImageInputSettings())
    thumbnail = store.put_thumbnail(decoded.sha256, decoded.image)
    if kind is not SourceKind.PATH:
        store.put_original(decoded.sha256, decoded.format, data)
    return NewImage(
        sha256=decoded.sha256,
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        byte_size=decoded.byte_size,
        vectors={"m": vector},
        source_kind=kind,
        source_uri=f"/photos/{seed}.jpg" if kind is SourceKind.PATH else None,
        thumbnail_path=thumbnail,
    )


def test_a_crash_between_commit_and_unlink_is_swept_and_young_files_wait(
    search: SearchService, data_dir: Path, unit_vectors: UnitVectors
) -> None:
    store = DataStore(data_dir)
    search.catalog.create_collection("c", ["m"])
    vectors = unit_vectors(3, DIM)
    items = [_stored_image(store, seed, vectors[seed]) for seed in range(3)]
    ids = [added.id for added in search.add_images("c", items)]
    # The "crash": rows deleted and committed, files never unlinked.
    search.delete_images("c", ids[:2])
    assert len(_files(data_dir, "originals")) == 3

    patient = StorageCollector(search, store, grace_s=3600)
    kept = patient.sweep()
    assert kept.files_removed == 0 and kept.files_kept_young == 4  # 2 thumbnails, 2 originals
    assert len(_files(data_dir, "originals")) == 3

    env = {"VIZDEX_DATABASE_URL": search.catalog.engine.url.render_as_string(False)}
    code = _gc_cli(data_dir, env)
    assert code["files_removed"] == 4
    assert len(_files(data_dir, "originals")) == 1 and len(_files(data_dir, "thumbs")) == 1
    remaining = search.catalog.get_image(search.get_collection("c").id, ids[2])
    assert store.thumbnail_file(remaining) is not None
    assert store.thumbnail_file(remaining).is_file()  # type: ignore[union-attr]
    # The index still answers from the catalog: only the survivor is found.
    found = search.search_vector("c", vectors[2], model="m")
    assert [hit.image.id for hit in found.hits] == [ids[2]]


def _gc_cli(data_dir: Path, env: dict[str, str]) -> dict[str, int]:
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            assert main(["gc", "--data-dir", str(data_dir), "--grace", "0", "--json"]) == 0
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    report: dict[str, int] = json.loads(out.getvalue())
    return report


def test_a_reused_file_is_young_again_so_a_delete_beside_an_ingest_keeps_it(
    search: SearchService, data_dir: Path, unit_vectors: UnitVectors
) -> None:
    """An ingest that finds the content's files already stored refreshes them: a delete of the
    other row that held them, committed before the ingest's row, does not take them away."""
    store = DataStore(data_dir)
    for name in ("one", "two"):
        search.catalog.create_collection(name, ["m"])
    vector = unit_vectors(1, DIM)[0]
    first = search.add_images("one", [_stored_image(store, 0, vector)])[0].id
    for path in _files(data_dir, "originals") + _files(data_dir, "thumbs"):
        past = path.stat().st_mtime - 7200
        os.utime(path, (past, past))
    again = _stored_image(store, 0, vector)  # the ingest into "two" decided to reuse the files
    collector = StorageCollector(search, store, grace_s=600)
    collector.delete_images("one", [first])  # nobody references them at this moment...
    search.add_images("two", [again])  # ...until the ingest commits
    assert len(_files(data_dir, "originals")) == 1 and len(_files(data_dir, "thumbs")) == 1


def test_pruned_tombstones_make_an_older_snapshot_rebuild_instead_of_missing_a_delete(
    search: SearchService, search_settings: SearchSettings, unit_vectors: UnitVectors
) -> None:
    record = search.catalog.create_collection("c", ["m"])
    vectors = unit_vectors(6, DIM)
    items = _plain_images(vectors)
    ids = [added.id for added in search.add_images("c", items)]
    search.indexes.snapshot(record)  # a replica's snapshot from before the deletes
    old_file = search.indexes.path_for(record.id, "m").read_bytes()
    search.delete_images("c", ids[:3])
    collector = StorageCollector(
        search, DataStore(search_settings.index.directory.parent), grace_s=0
    )
    assert collector.prune_tombstones() == 3
    assert search.catalog.row_counts()["embedding_tombstones"] == 0
    assert search.get_collection("c").pruned_seq == search.catalog.collection_seq(record.id)
    assert collector.prune_tombstones() == 0  # nothing new to prune

    # Another process starts from the old snapshot: it cannot replay the pruned deletes.
    search.indexes.path_for(record.id, "m").write_bytes(old_file)
    other = IndexStore(search.catalog, search_settings.index)
    try:
        fresh = search.get_collection("c")
        assert sorted(other.ids(fresh, "m").tolist()) == sorted(ids[3:])
    finally:
        other.close(snapshot=False)


def test_metadata_keys_that_filters_cannot_name_are_refused_on_write(
    search: SearchService, unit_vectors: UnitVectors
) -> None:
    search.catalog.create_collection("c", ["m"])
    vector = unit_vectors(1, DIM)[0]
    image = NewImage(
        sha256="a" * 64,
        width=1,
        height=1,
        format="JPEG",
        byte_size=1,
        vectors={"m": vector},
        metadata={"bad/key": 1},
    )
    with pytest.raises(InvalidInputError) as refused:
        search.add_images("c", [image])
    assert refused.value.code == "invalid_metadata_key"
    assert refused.value.details["key"] == "bad/key"
    added = search.add_images("c", [replace(image, metadata={"good key.1": 1})])[0].id
    with pytest.raises(InvalidInputError, match="'\\$x'"):
        search.update_metadata("c", added, {"$x": 1})


def test_http_metadata_key_refusal_names_the_key(client: Client) -> None:
    assert client.post("/v1/collections", json={"name": "m"}).status_code == 201
    answer = client.post(
        "/v1/collections/m/images",
        json={"images": [{"data": photo_b64(1), "metadata": {'a"b': 1}}]},
    )
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["code"] == "invalid_metadata_key" and body["details"]["key"] == 'a"b'
    ok = upload_photos(client, "m", [2])
    patched = client.patch(f"/v1/collections/m/images/{ok[0]}", json={"metadata": {"": 1}})
    assert patched.status_code == 422 and patched.json()["code"] == "invalid_metadata_key"
    assert patched.json()["details"]["key"] == ""


def test_http_metadata_integers_beyond_64_bits_are_kept_exactly(client: Client) -> None:
    """JSON allows integers of any size: the schema takes them, and so does the service."""
    assert client.post("/v1/collections", json={"name": "n"}).status_code == 201
    big = {"big": 2**64 + 5, "nested": [{"b": -(2**70)}]}
    answer = client.post(
        "/v1/collections/n/images", json={"images": [{"data": photo_b64(3), "metadata": big}]}
    )
    assert answer.status_code in (200, 201), answer.text
    image_id = answer.json()["results"][0]["id"]
    assert client.get(f"/v1/collections/n/images/{image_id}").json()["metadata"] == big
    patched = client.patch(
        f"/v1/collections/n/images/{image_id}", json={"metadata": {"a": [{"b": 2**63}]}}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["metadata"] == {"a": [{"b": 2**63}]}


def test_similarity_schema_limits_and_the_service_cap_agree(client: Client) -> None:
    """Both sides at the cap pass the schema and the service; one more is the schema's 422."""
    body = json_schema(SimilarityRequest)["properties"]
    cap = state_of(client.app).search._settings.max_similarity_inputs
    assert body["images"]["maxItems"] == cap == MAX_SIMILARITY_INPUTS
    others = body["others"]
    assert cap in [option.get("maxItems") for option in others.get("anyOf", [others])]
    tiny = base64.b64encode(photo_jpeg(1, 16, 16)).decode("ascii")
    full = client.post(
        "/v1/vision/similarity", json={"images": [tiny] * cap, "others": [tiny] * cap}
    )
    assert full.status_code == 200, full.text[:300]
    scores = full.json()["scores"]
    assert len(scores) == cap and len(scores[0]) == cap
    empty = client.post("/v1/vision/similarity", json={"images": [tiny], "others": []})
    assert empty.status_code == 200 and empty.json()["scores"] == [[]]
    over = client.post("/v1/vision/similarity", json={"images": [tiny] * (cap + 1)})
    assert over.status_code == 400  # the schema refuses it: the service never sees it


def test_model_states_in_the_catalog(search: SearchService, unit_vectors: UnitVectors) -> None:
    """Add (backfilling while images lack it), mark ready only when none does, defaults only
    among ready models, removal only of a non-default: on every supported database."""
    catalog = search.catalog
    record = catalog.create_collection("c", ["m"], text_model=None, image_model="m")
    empty = catalog.create_collection("e", ["m"])
    assert catalog.add_model(empty.id, "n").model_states == {}  # no images: ready at once
    vectors = unit_vectors(3, DIM)
    items = _plain_images(vectors)
    ids = [added.id for added in search.add_images("c", items)]
    added = catalog.add_model(record.id, "n")
    assert added.models == ("m", "n") and added.ready_models == ("m",)
    assert catalog.add_model(record.id, "n") == added  # idempotent
    # A writer that read the collection before: images without "n" are still accepted.
    late = replace(items[0], sha256="f" * 64)
    search.add_images("c", [late])
    assert catalog.count_lacking(record.id, "n") == 4
    with pytest.raises(ModelNotReadyError):
        catalog.set_default_models(record.id, image_model="n")
    catalog.put_embeddings(record.id, "n", ids, unit_vectors(3, 4))
    assert not catalog.mark_ready(record.id, "n")  # the late image still lacks it
    lacking = catalog.images_lacking(record.id, "n")
    assert [image.sha256 for image in lacking] == ["f" * 64]
    catalog.put_embeddings(record.id, "n", [lacking[0].id], unit_vectors(1, 4))
    assert catalog.mark_ready(record.id, "n")
    assert catalog.model_coverage(record.id) == {"m": 4, "n": 4}
    switched = catalog.set_default_models(record.id, text_model=None, image_model="n")
    assert (switched.text_model, switched.image_model) == (None, "n")
    with pytest.raises(ModelInUseError):
        catalog.remove_model(record.id, "n")
    kept = catalog.remove_model(record.id, "m")
    assert kept.models == ("n",) and catalog.model_coverage(record.id) == {"n": 4}
    catalog.set_default_models(record.id, image_model=None)
    with pytest.raises(ModelInUseError, match="only model"):
        catalog.remove_model(record.id, "n")


def test_tombstones_an_external_store_has_not_applied_stay(
    search: SearchService, unit_vectors: UnitVectors
) -> None:
    record = search.catalog.create_collection("c", ["m"])
    vectors = unit_vectors(4, DIM)
    items = _plain_images(vectors)
    ids = [added.id for added in search.add_images("c", items)]
    search.catalog.set_store_position("milvus://m:19530", record.id, "m", 4, index_type="HNSW")
    search.delete_images("c", ids)  # tombstones 5..8
    assert search.catalog.prune_tombstones(record.id, 8) == 0  # the follower is at 4
    search.catalog.set_store_position("milvus://m:19530", record.id, "m", 6, index_type="HNSW")
    assert search.catalog.prune_tombstones(record.id, 8) == 2
    assert search.catalog.pruned_seq(record.id) == 6


def test_the_sweep_removes_uploads_spooled_for_jobs_that_will_never_run_them(
    search: SearchService, data_dir: Path
) -> None:
    """A queued upload job whose collection is deleted (its chunks go with it) or that is
    cancelled while its chunk runs leaves its spooled bytes behind: the sweep takes them, and
    leaves a live job's alone."""
    store = DataStore(data_dir)
    catalog = search.catalog
    jobs = {}
    for name in ("kept", "dropped", "cancelled"):
        spooled = store.resolve(f"queue/{name}-token/0")
        spooled.parent.mkdir(parents=True)
        spooled.write_bytes(b"uploaded bytes")
        collection = catalog.create_collection(name, ["clip"])
        jobs[name] = catalog.enqueue_job(
            collection.id,
            kind="upload",
            source="1 upload",
            total=1,
            chunks=[{"uploads": [{"file": f"queue/{name}-token/0", "name": "a.jpg"}]}],
        )
    search.delete_collection("dropped")
    running = catalog.claim_work("worker", lease_s=60)
    assert running is not None and running.job_id == jobs["kept"].id
    running = catalog.claim_work("worker", lease_s=60)
    assert running is not None and running.job_id == jobs["cancelled"].id
    catalog.cancel_job(jobs["cancelled"].id)
    catalog.finish_work(running.id, "worker")  # its worker stops: nothing removed its spool

    young = StorageCollector(search, store, grace_s=3600).sweep()
    assert young.files_removed == 0 and len(store.spooled_files()) == 3  # may be in flight
    swept = StorageCollector(search, store, grace_s=0).sweep()
    assert swept.files_removed == 2
    assert store.spooled_files() == ["queue/kept-token/0"]  # its chunk still runs
    assert not store.resolve("queue/dropped-token").exists()


def _ended(search: SearchService, job_id: int, ago: timedelta) -> None:
    """Back-dates a job's end (and last update) by ``ago``, as if it had ended then."""
    when = datetime.now(UTC) - ago
    with search.catalog.engine.begin() as connection:
        connection.execute(
            update(Job).where(Job.id == job_id).values(finished_at=when, updated_at=when)
        )


def test_finished_jobs_older_than_the_retention_are_pruned_with_their_chunks_live_ones_never(
    search: SearchService, data_dir: Path
) -> None:
    catalog = search.catalog
    record = catalog.create_collection("c", ["m"])
    old, recent = timedelta(days=40), timedelta(hours=1)
    finished: dict[str, int] = {}
    for state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED):
        job = catalog.create_job(record.id, kind="ingest", source=state.value)
        catalog.set_job_state(job.id, state)
        _ended(search, job.id, old)
        finished[state.value] = job.id
    # A queued job that ran to its end: its chunks go with it.
    queued = catalog.enqueue_job(
        record.id, kind="ingest", source="q", total=2, chunks=[{"paths": []}, {"paths": []}]
    )
    for _ in range(2):
        claimed = catalog.claim_work("w", lease_s=60)
        assert claimed is not None
        catalog.finish_work(claimed.id, "w")
    assert catalog.get_job(queued.id).state is JobState.DONE
    _ended(search, queued.id, old)
    young = catalog.create_job(record.id, kind="ingest", source="young")
    catalog.set_job_state(young.id, JobState.DONE)
    _ended(search, young.id, recent)
    # Live jobs stay whatever their age: a running one (its process alive) and a pending one,
    # with a queued chunk nobody claimed yet.
    running = catalog.create_job(record.id, kind="backfill", source="m")
    catalog.start_job(running.id)
    _ended(search, running.id, old)
    pending = catalog.enqueue_job(
        record.id, kind="ingest", source="p", total=1, chunks=[{"paths": []}]
    )
    _ended(search, pending.id, old)
    assert catalog.row_counts()["work_items"] == 3

    report = StorageCollector(search, DataStore(data_dir), grace_s=0).sweep()  # 30 days
    assert report.jobs_pruned == 4
    left = {job.id for job in catalog.list_jobs()}
    assert left == {young.id, running.id, pending.id}
    assert catalog.row_counts()["work_items"] == 1  # the pending job's chunk

    env = {
        "VIZDEX_DATABASE_URL": catalog.engine.url.render_as_string(False),
        "VIZDEX_JOB_RETENTION_S": "60",
    }
    assert _gc_cli(data_dir, env)["jobs_pruned"] == 1  # the one that ended an hour ago
    assert {job.id for job in catalog.list_jobs()} == {running.id, pending.id}
    assert catalog.get_job(running.id).state is JobState.RUNNING
    assert catalog.claim_work("w", lease_s=60) is not None  # the pending job's chunk is intact


def test_the_job_retention_setting_is_bounded() -> None:
    with pytest.raises(InvalidInputError, match="job retention"):
        IndexerSettings(data_dir=Path("."), job_retention_s=-1)
    with pytest.raises(InvalidInputError, match="job retention"):
        IndexerSettings(data_dir=Path("."), job_retention_s=1e12)
    assert IndexerSettings.from_env({"VIZDEX_JOB_RETENTION_S": "0"}).job_retention_s == 0
