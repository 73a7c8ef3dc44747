"""Read-your-writes across replicas: writes answer the collection's sequence number (``seq``),
a search given ``min_seq`` waits until this replica's indexes hold it, else 503 not_caught_up;
``/health/ready`` reports the replica's lag.

The service tests run on SQLite and PostgreSQL: two services on one catalog, each with its own
index folder, stand for two replicas (the second does not sync on queries, so only ``min_seq``
brings it up to date). The HTTP tests run one real app on SQLite.
"""

from __future__ import annotations

import importlib.util
import itertools
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from tests.support.api_helpers import api_client, api_settings, photo_b64, state_of
from tests.support.postgres import DATABASES, database_url_for
from vizdex.encoders.base import Encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.search import CollectionRecord, InvalidQueryError, NotCaughtUpError
from vizdex.search.records import NewImage
from vizdex.search.service import SearchService
from vizdex.search.settings import SearchSettings
from vizdex.search.vector_store import FaissVectorStore
from vizdex.web.settings import LimitSettings

Client = TestClient[Litestar]
MODEL, DIM = "vectors-only", 8


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, data_dir: Path) -> str:
    return database_url_for(request, data_dir)


def replica(settings: SearchSettings, name: str, *, sync_on_query: bool) -> SearchService:
    index = replace(
        settings.index,
        directory=settings.index.directory / name,
        device="cpu",
        sync_on_query=sync_on_query,
    )
    query = replace(settings.query, catch_up_wait_s=0.2)
    return SearchService.open(replace(settings, index=index, query=query), {})


def new_image(seed: int) -> NewImage:
    vector = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return NewImage(
        sha256=f"{seed:064x}",
        width=8,
        height=8,
        format="jpeg",
        byte_size=100,
        vectors={MODEL: vector / np.linalg.norm(vector)},
    )


@pytest.fixture
def replicas(search_settings: SearchSettings) -> Iterator[tuple[SearchService, SearchService]]:
    writer = replica(search_settings, "a", sync_on_query=True)
    reader = replica(search_settings, "b", sync_on_query=False)
    try:
        yield writer, reader
    finally:
        reader.close()
        writer.close()


def test_min_seq_catches_a_replica_up_with_another_ones_write(
    replicas: tuple[SearchService, SearchService],
) -> None:
    writer, reader = replicas
    writer.catalog.create_collection("shared", [MODEL])
    first = writer.add_images("shared", [new_image(1)])[0].id
    record = reader.get_collection("shared")
    assert reader.indexes.ids(record, MODEL).tolist() == [first]  # loaded, then left alone
    second = writer.add_images("shared", [new_image(2)])[0].id
    seq = writer.collection_seq("shared")
    assert seq > 0
    assert reader.indexes.ids(record, MODEL).tolist() == [first]  # behind: nothing syncs it
    assert [seq_of for _, seq_of in reader.lag()] == [seq - 1]
    reader.catch_up("shared", seq)
    assert sorted(reader.indexes.ids(record, MODEL).tolist()) == [first, second]
    assert [applied for _, applied in reader.lag()] == [seq]
    writer.delete_images("shared", [first])
    reader.catch_up("shared", writer.collection_seq("shared"))
    assert reader.indexes.ids(record, MODEL).tolist() == [second]


def test_a_seq_the_catalog_has_not_handed_out_is_not_caught_up(
    replicas: tuple[SearchService, SearchService],
) -> None:
    writer, reader = replicas
    writer.catalog.create_collection("shared", [MODEL])
    writer.add_images("shared", [new_image(3)])
    head = writer.collection_seq("shared")
    reader.catch_up("shared", None)  # no min_seq: nothing to wait for
    reader.catch_up("shared", 0)
    with pytest.raises(InvalidQueryError) as raised:
        reader.catch_up("shared", head + 5)
    assert raised.value.code == "invalid_query"
    assert raised.value.details == {"min_seq": head + 5, "head_seq": head}


def test_a_replica_held_up_past_the_wait_is_not_caught_up(
    replicas: tuple[SearchService, SearchService],
) -> None:
    writer, reader = replicas
    writer.catalog.create_collection("shared", [MODEL])
    writer.add_images("shared", [new_image(4)])
    record = reader.get_collection("shared")
    assert len(reader.indexes.ids(record, MODEL)) == 1  # loaded, then left alone
    writer.add_images("shared", [new_image(5)])
    seq = writer.collection_seq("shared")
    # Its index is busy (a retrain's swap, a long replay) past the wait: the wait stays bounded.
    with held_indexes(reader, record), pytest.raises(NotCaughtUpError) as raised:
        reader.catch_up("shared", seq)
    assert (raised.value.code, raised.value.retry_after) == ("not_caught_up", 1)
    assert raised.value.details == {"min_seq": seq, "head_seq": seq}
    reader.catch_up("shared", seq)  # free again: it catches up at once
    assert len(reader.indexes.ids(record, MODEL)) == 2


@contextmanager
def held_indexes(service: SearchService, record: CollectionRecord) -> Iterator[None]:
    """Holds the locks each of the collection's indexes takes to apply changes, as a writer
    busy on them would."""
    with ExitStack() as stack:
        for model in record.models:
            stack.enter_context(service.indexes._slot(record, model).mutex)
        yield


# -- over HTTP (SQLite) ----------------------------------------------------------------------


def _stores() -> list[str]:
    """The local FAISS indexes always; Milvus (a milvus-lite file) where pymilvus is installed."""
    return ["faiss", "milvus"] if importlib.util.find_spec("milvus_lite") else ["faiss"]


@pytest.fixture(scope="module", params=_stores())
def client(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    cpu_settings: EncoderSettings,
    clip_encoder: Encoder,
    dino_encoder: Encoder,
) -> Iterator[Client]:
    root = tmp_path_factory.mktemp("ryw")
    settings = api_settings(root / "data", cpu_settings)
    query = replace(settings.search.query, catch_up_wait_s=0.2)
    store = str(root / "vectors.db") if request.param == "milvus" else "faiss"
    index = replace(settings.search.index, vector_store=store)
    settings = replace(
        settings,
        search=replace(settings.search, query=query, index=index),
        limits=replace(LimitSettings(), upload_sync_images=1),
    )
    models = {clip_encoder.name: clip_encoder, dino_encoder.name: dino_encoder}
    with api_client(settings, models) as test_client:
        assert test_client.post("/v1/collections", json={"name": "ryw"}).status_code == 201
        yield test_client


def search(client: Client, **extra: Any) -> Any:
    return client.post("/v1/collections/ryw/search", json={"text": "a photo", **extra})


def test_writes_answer_their_seq_and_searches_wait_for_it(client: Client) -> None:
    uploaded = client.post("/v1/collections/ryw/images", json={"images": [{"data": photo_b64(1)}]})
    assert uploaded.status_code == 201
    body = uploaded.json()
    image_id, seq = body["results"][0]["id"], body["seq"]
    assert isinstance(seq, int) and seq > 0 and uploaded.headers["Vizdex-Seq"] == str(seq)
    found = search(client, min_seq=seq)
    assert found.status_code == 200 and image_id in [hit["id"] for hit in found.json()["hits"]]
    multimodal = client.post(
        "/v1/multimodal/search", json={"collection": "ryw", "text": "a photo", "min_seq": seq}
    )
    assert multimodal.status_code == 200
    patched = client.patch(
        f"/v1/collections/ryw/images/{image_id}", json={"metadata": {"tag": "x"}}
    )
    # A metadata change takes a sequence number (the feed carries it to Milvus): a search with
    # it as min_seq finds the new metadata, in Milvus's own filter too.
    assert patched.status_code == 200 and int(patched.headers["Vizdex-Seq"]) > seq
    tagged = search(
        client, min_seq=int(patched.headers["Vizdex-Seq"]), filter={"metadata": {"tag": "x"}}
    )
    assert [hit["id"] for hit in tagged.json()["hits"]] == [image_id]
    deleted = client.delete(f"/v1/collections/ryw/images/{image_id}")
    assert deleted.status_code == 204
    after_delete = int(deleted.headers["Vizdex-Seq"])  # the delete's own change
    assert after_delete > int(patched.headers["Vizdex-Seq"])
    gone = search(client, min_seq=after_delete)
    assert gone.status_code == 200 and image_id not in [hit["id"] for hit in gone.json()["hits"]]


def test_a_min_seq_no_write_produced_is_a_422(client: Client) -> None:
    answer = search(client, min_seq=2**62)
    assert answer.status_code == 422
    assert answer.json()["code"] == "invalid_query"


@pytest.mark.parametrize("bad", [-1, "seven", 1.5, 2**63, [1]])
def test_a_bad_min_seq_is_a_typed_4xx(client: Client, bad: object) -> None:
    answer = search(client, min_seq=bad)
    assert answer.status_code in (400, 422), answer.text
    body = answer.json()
    assert body["code"] == "invalid_request", body
    assert [error["key"] for error in body["errors"]] == ["min_seq"], body


def test_a_finished_job_answers_its_seq(client: Client) -> None:
    images = [{"data": photo_b64(seed)} for seed in (11, 12)]
    accepted = client.post("/v1/collections/ryw/images", json={"images": images})
    assert accepted.status_code == 202 and accepted.json()["seq"] is None
    job_url = accepted.json()["job_url"]
    deadline = time.monotonic() + 120
    job = client.get(job_url).json()
    while job["state"] in ("pending", "running") and time.monotonic() < deadline:
        time.sleep(0.1)
        job = client.get(job_url).json()
    assert job["state"] == "done" and job["done"] == 2
    assert isinstance(job["seq"], int) and job["seq"] > 0
    found = search(client, min_seq=job["seq"], k=50)
    assert found.status_code == 200 and len(found.json()["hits"]) >= 2


def test_ready_reports_no_lag_once_caught_up(client: Client) -> None:
    # Tests run in random order: another may have left a write behind the app's back. Catch up
    # with each collection's head first, as a search given the head's seq would.
    service = state_of(client.app).search
    for record in service.catalog.list_collections():
        service.catch_up(record.name, service.catalog.collection_seq(record.id))
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "lag": 0, "collections_behind": 0}


UNAPPLIED_SEEDS = itertools.count(1000)


def _unapplied_write(client: Client) -> tuple[SearchService, CollectionRecord, int]:
    """A write committed to the catalog behind the app's back (as another replica's would be),
    which its indexes have not applied yet; returns its sequence number."""
    state = state_of(client.app)
    service = state.search
    record = service.get_collection("ryw")
    seed = next(UNAPPLIED_SEEDS)
    rng = np.random.default_rng(seed)
    vectors = {}
    for model in record.models:
        vector = rng.standard_normal(state.models[model].dim).astype(np.float32)
        vectors[model] = vector / np.linalg.norm(vector)
    image = NewImage(
        sha256=f"{seed:064x}", width=8, height=8, format="jpeg", byte_size=1, vectors=vectors
    )
    service.catalog.add_images(record.id, [image])
    return service, record, service.catalog.collection_seq(record.id)


def test_a_replica_that_cannot_catch_up_in_time_answers_503_with_retry_after(
    client: Client,
) -> None:
    service = state_of(client.app).search
    if not isinstance(service.store, FaissVectorStore):
        pytest.skip("holds the local FAISS indexes' locks: Milvus searches do not take them")
    record = service.get_collection("ryw")
    # The locks first, then the write: else the app's follower may apply it in between.
    with held_indexes(service, record):
        _, _, seq = _unapplied_write(client)
        behind = search(client, min_seq=seq)
        scan = client.post("/v1/collections/ryw/duplicates", json={"min_seq": seq})
    for answer in (behind, scan):
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "1"
        assert answer.json()["code"] == "not_caught_up"
    assert search(client, min_seq=seq).status_code == 200


def test_a_duplicate_scan_waits_for_min_seq_like_a_search(client: Client) -> None:
    _, _, seq = _unapplied_write(client)
    scan = client.post("/v1/collections/ryw/duplicates", json={"min_seq": seq})
    assert scan.status_code == 200, scan.text
    assert scan.json()["scanned"] == client.get("/v1/collections/ryw").json()["image_count"]
    ahead = client.post("/v1/collections/ryw/duplicates", json={"min_seq": seq + 1000})
    assert (ahead.status_code, ahead.json()["code"]) == (422, "invalid_query")
    bad = client.post("/v1/collections/ryw/duplicates", json={"min_seq": -1})
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_request")


def _holds(service: SearchService, record: CollectionRecord, model: str) -> bool:
    """Whether the store holds vectors of ``model``: its Milvus collection, or a local index."""
    from vizdex.search.milvus_store import MilvusVectorStore  # pymilvus only where installed

    store = service.store
    if isinstance(store, MilvusVectorStore):
        return bool(store.client.has_collection(store.name_of(record.id, model)))
    return service.indexes.info(record, model).count > 0


def test_removing_a_model_over_http_drops_what_the_store_holds_for_it(client: Client) -> None:
    """DELETE /v1/collections/{name}/models?model=: the catalog forgets the model, and the
    store its vectors (the Milvus collection, or the local FAISS index)."""
    created = client.post("/v1/collections", json={"name": "rm"}).json()
    clip, dino = created["text_model"], created["image_model"]
    assert sorted(created["models"]) == sorted([clip, dino]) and clip != dino
    added = client.post("/v1/collections/rm/images", json={"images": [{"data": photo_b64(21)}]})
    image_id, seq = added.json()["results"][0]["id"], added.json()["seq"]
    for model in (clip, dino):  # each model's vectors reach the store
        answer = client.post(
            "/v1/collections/rm/search",
            json={"image_id": image_id, "model": model, "min_seq": seq, "fuse": False},
        )
        assert answer.status_code == 200, answer.text
    service = state_of(client.app).search
    record = service.get_collection("rm")
    assert _holds(service, record, clip) and _holds(service, record, dino)
    assert client.patch("/v1/collections/rm", json={"image_model": clip}).status_code == 200
    removed = client.delete("/v1/collections/rm/models", params={"model": dino})
    assert removed.status_code == 200, removed.text
    assert removed.json()["models"] == [clip]
    assert not _holds(service, record, dino) and _holds(service, record, clip)
