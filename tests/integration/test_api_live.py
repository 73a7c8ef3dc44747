"""A real uvicorn server on loopback: overload (429), disconnects, CORS, and `vizdex serve`."""

from __future__ import annotations

import argparse
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from tests.support.api_helpers import (
    GatedEncoder,
    api_client,
    api_settings,
    database_unreachable,
    live_server,
    photo_b64,
    photo_jpeg,
    state_of,
    upload_photos,
    wait_until,
)
from vizdex.cli import serve
from vizdex.core.errors import ModelNotFoundError
from vizdex.encoders.base import Encoder, WrappedEncoder
from vizdex.encoders.batched_encoder import BatchedEncoder
from vizdex.encoders.settings import BatchSettings, EncoderSettings
from vizdex.search import SchemaMismatchError, SchemaOutOfDateError, SearchService
from vizdex.search.db import sqlite_file
from vizdex.web.settings import LimitSettings, ServiceSettings

ENCODE = "/v1/vision/encode"


def gated_settings(tmp_path: Path, cpu_settings: EncoderSettings) -> ServiceSettings:
    # One item per model call and room for two more: easy to fill on purpose.
    return api_settings(
        tmp_path / "data",
        cpu_settings,
        batching=BatchSettings(max_batch=1, max_wait_ms=0, queue_size=2),
    )


def test_saturated_queue_answers_429_with_retry_after(
    tmp_path: Path, cpu_settings: EncoderSettings, clip_encoder: Encoder
) -> None:
    gated = GatedEncoder(clip_encoder)
    body = {"images": [photo_b64(1)]}
    with (
        live_server(gated_settings(tmp_path, cpu_settings), {gated.name: gated}) as server,
        ThreadPoolExecutor(4) as pool,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        queue = server.state.encoders[gated.name]
        assert isinstance(queue, BatchedEncoder)
        try:
            running = pool.submit(client.post, ENCODE, json=body)
            assert gated.entered.wait(30)
            waiting = [pool.submit(client.post, ENCODE, json=body) for _ in range(2)]
            wait_until(lambda: queue.image_queue.depth == 2, what="two queued items")
            refused = client.post(ENCODE, json=body)
            assert refused.status_code == 429, refused.text
            assert refused.json()["code"] == "overloaded"
            assert int(refused.headers["retry-after"]) >= 1
            search = client.post("/v1/multimodal/encode", json={"images": [photo_b64(2)]})
            assert search.status_code == 429  # every route into that queue is refused alike
        finally:
            gated.gate.set()
        assert [f.result(60).status_code for f in [running, *waiting]] == [200, 200, 200]
        metrics = client.get("/metrics").text
        assert 'vizdex_queue_rejected_items_total{input="image"' in metrics


def test_disconnected_client_leaves_no_work_behind(
    tmp_path: Path, cpu_settings: EncoderSettings, clip_encoder: Encoder
) -> None:
    gated = GatedEncoder(clip_encoder)
    body = json.dumps({"images": [photo_b64(1)]}).encode()
    with (
        live_server(gated_settings(tmp_path, cpu_settings), {gated.name: gated}) as server,
        ThreadPoolExecutor(2) as pool,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        queue = server.state.encoders[gated.name]
        assert isinstance(queue, BatchedEncoder)
        try:
            running = pool.submit(client.post, ENCODE, content=body)
            assert gated.entered.wait(30)
            raw = socket.create_connection(("127.0.0.1", server.port))
            raw.sendall(
                b"POST " + ENCODE.encode() + b" HTTP/1.1\r\nHost: test\r\n"
                b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            wait_until(lambda: queue.image_queue.depth == 1, what="the item to be queued")
            raw.close()  # the client goes away while its item waits
            entries = list(queue.image_queue._queue)
            wait_until(lambda: entries[0].future.cancelled(), what="the item to be cancelled")
        finally:
            gated.gate.set()
        assert running.result(60).status_code == 200
        wait_until(lambda: queue.image_queue.depth == 0, what="the queue to drain")
        assert gated.rows_encoded == 1  # only the connected client's image reached the model
        skipped = 'vizdex_queue_skipped_items_total{input="image"'
        line = next(x for x in client.get("/metrics").text.splitlines() if x.startswith(skipped))
        assert line.endswith(" 1.0")


def batch_sizes(metrics: str, model: str) -> tuple[float, float]:
    """(model calls, items) of the image queue, from /metrics' batch-size histogram."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.labels.get("model") == model and sample.labels.get("input") == "image":
                found[sample.name] = sample.value
    return found.get("vizdex_batch_size_count", 0.0), found.get("vizdex_batch_size_sum", 0.0)


def test_concurrent_http_requests_share_one_model_call(
    tmp_path: Path, cpu_settings: EncoderSettings, clip_encoder: Encoder
) -> None:
    """Micro-batching over real HTTP: requests that wait together go through one forward."""
    gated = GatedEncoder(clip_encoder)
    settings = api_settings(
        tmp_path / "data",
        cpu_settings,
        batching=BatchSettings(max_batch=8, max_wait_ms=0, queue_size=16),
    )
    seeds = [3, 4, 5, 6]
    with (
        live_server(settings, {gated.name: gated}) as server,
        ThreadPoolExecutor(len(seeds) + 1) as pool,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        queue = server.state.encoders[gated.name]
        assert isinstance(queue, BatchedEncoder)
        try:
            first = pool.submit(client.post, ENCODE, json={"images": [photo_b64(2)]})
            assert gated.entered.wait(30)  # the model is busy with the first request...
            together = [
                pool.submit(client.post, ENCODE, json={"images": [photo_b64(seed)]})
                for seed in seeds
            ]  # ...while four more arrive, over four connections
            wait_until(lambda: queue.image_queue.depth == len(seeds), what="four queued images")
        finally:
            gated.gate.set()
        answers = [future.result(60) for future in [first, *together]]
        assert [answer.status_code for answer in answers] == [200] * 5
        # One forward for the first, one for the four that waited together.
        assert gated.calls == [1, len(seeds)]
        assert batch_sizes(client.get("/metrics").text, gated.name) == (2.0, 5.0)
        # Batched, each request still gets its own image's vector.
        for seed, answer in zip(seeds, answers[1:], strict=True):
            alone = client.post(ENCODE, json={"images": [photo_b64(seed)]}).json()
            np.testing.assert_allclose(
                answer.json()["embeddings"][0], alone["embeddings"][0], atol=1e-5
            )


def test_too_many_waiting_upload_jobs_answer_429(
    tmp_path: Path, cpu_settings: EncoderSettings, clip_encoder: Encoder
) -> None:
    """VIZDEX_MAX_PENDING_JOBS: with that many upload jobs waiting, the next is refused."""
    gated = GatedEncoder(clip_encoder)  # the first job holds the model: the next ones wait
    settings = api_settings(
        tmp_path / "data", cpu_settings, limits=LimitSettings(upload_sync_images=1, pending_jobs=1)
    )

    def upload(client: httpx.Client, first_seed: int) -> httpx.Response:
        files = [
            ("images", (f"{seed}.jpg", photo_jpeg(seed), "image/jpeg"))
            for seed in (first_seed, first_seed + 1)  # two images: more than 1, so a job
        ]
        return client.post("/v1/collections/jobs/images", files=files)

    with (
        live_server(settings, {gated.name: gated}) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        assert client.post("/v1/collections", json={"name": "jobs"}).status_code == 201
        try:
            running = upload(client, 10)
            assert running.status_code == 202, running.text
            assert gated.entered.wait(30)  # job 1 is in the model
            waiting = upload(client, 20)
            assert waiting.status_code == 202, waiting.text  # job 2 waits: one is allowed
            refused = upload(client, 30)
            assert refused.status_code == 429, refused.text
            assert refused.json()["code"] == "overloaded"
            assert refused.headers["retry-after"] == "30"
        finally:
            gated.gate.set()
        for accepted in (running, waiting):
            url = accepted.json()["job_url"]
            wait_until(lambda u=url: client.get(u).json()["state"] == "done", 60, "the jobs")
        assert upload(client, 30).status_code == 202  # nothing waits now: accepted again


def test_connections_beyond_the_limit_get_503_before_the_body(
    tmp_path: Path, cpu_settings: EncoderSettings, clip_encoder: Encoder
) -> None:
    """VIZDEX_MAX_CONNECTIONS: uvicorn itself answers 503, without reading the request body."""
    settings = api_settings(tmp_path / "data", cpu_settings, limits=LimitSettings(connections=2))
    with live_server(settings, {clip_encoder.name: clip_encoder}) as server:
        connections = server.server.server_state.connections
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
        try:
            for sock in held:  # open, mid-request: headers never finished
                sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\n")
            wait_until(lambda: len(connections) == 2, what="two open connections")
            with socket.create_connection(("127.0.0.1", server.port)) as extra:
                extra.settimeout(30)
                # Headers of a 10 MB upload, and no body at all: the answer cannot wait for it.
                extra.sendall(
                    b"POST /v1/vision/encode HTTP/1.1\r\nHost: test\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n"
                )
                answer = b""
                while b"\r\n\r\n" not in answer or not answer.endswith(b"Unavailable"):
                    chunk = extra.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503 "), answer
            assert b"content-type: text/plain" in head.lower() and body == b"Service Unavailable"
        finally:
            for sock in held:
                sock.close()
        wait_until(lambda: len(connections) == 0, what="the held connections to close")
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert client.get("/health/ready").status_code == 200  # room again


def test_cors_only_when_configured(
    tmp_path: Path, cpu_settings: EncoderSettings, clip_encoder: Encoder
) -> None:
    preflight = {
        "origin": "https://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    }
    models = {clip_encoder.name: clip_encoder}
    with api_client(api_settings(tmp_path / "a", cpu_settings), models) as closed:
        plain = closed.get("/v1/models", headers={"origin": "https://app.example"})
        assert "access-control-allow-origin" not in plain.headers
    allowed = api_settings(tmp_path / "b", cpu_settings, cors_origins=("https://app.example",))
    with api_client(allowed, models) as open_client:
        answer = open_client.options("/v1/vision/encode", headers=preflight)
        assert answer.headers["access-control-allow-origin"] == "https://app.example"
        other = open_client.get("/v1/models", headers={"origin": "https://evil.example"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"


def test_readiness_is_false_without_a_database(
    tmp_path: Path, cpu_settings: EncoderSettings, clip_encoder: Encoder
) -> None:
    settings = api_settings(tmp_path / "data", cpu_settings)
    with api_client(settings, {clip_encoder.name: clip_encoder}) as client:
        assert client.get("/health/ready").status_code == 200
        with database_unreachable(state_of(client.app)):
            not_ready = client.get("/health/ready")
            assert not_ready.status_code == 503 and not_ready.json() == {"status": "starting"}
            assert client.get("/health/live").json() == {"status": "ok"}  # alive, not ready
        ready = client.get("/health/ready")  # the database is back: ready again
        assert ready.status_code == 200 and ready.json() == {
            "status": "ready",
            "lag": 0,
            "collections_behind": 0,
        }


def test_readiness_is_false_when_the_database_file_vanishes_under_an_open_pool(
    tmp_path: Path, cpu_settings: EncoderSettings, clip_encoder: Encoder
) -> None:
    """The pool keeps its connections: SQLite would answer ``SELECT 1`` from the open file."""
    settings = api_settings(tmp_path / "data", cpu_settings)
    with api_client(settings, {clip_encoder.name: clip_encoder}) as client:
        assert client.get("/health/ready").status_code == 200
        path = sqlite_file(state_of(client.app).search.catalog.engine.url)
        assert path is not None
        aside = path.with_name("moved-away.db")
        path.rename(aside)
        try:
            not_ready = client.get("/health/ready")
            assert not_ready.status_code == 503 and not_ready.json() == {"status": "starting"}
        finally:
            aside.rename(path)
        assert client.get("/health/ready").status_code == 200


def test_readiness_is_false_while_starting(
    tmp_path: Path, cpu_settings: EncoderSettings, clip_encoder: Encoder
) -> None:
    settings = api_settings(tmp_path / "data", cpu_settings)
    with api_client(settings, {clip_encoder.name: clip_encoder}) as client:
        state = state_of(client.app)
        service, state.search_service = state.search_service, None
        try:
            not_ready = client.get("/health/ready")
            assert not_ready.status_code == 503 and not_ready.json() == {"status": "starting"}
            assert client.get("/v1/collections").status_code == 503
        finally:
            state.search_service = service


class WarmsUpAfterTheIndexes(WrappedEncoder):
    """A model whose warm-up holds on until the server's indexes are open (at most a minute):
    it can only see them open if the start loads them beside the models, not after."""

    def __init__(self, inner: Encoder, opened: threading.Event) -> None:
        super().__init__(inner)
        self.opened = opened
        self.overlapped = False

    def warmup(self) -> None:
        self.overlapped = self.opened.wait(timeout=60)
        super().warmup()


def test_indexes_open_while_the_models_load_and_searches_use_the_models(
    tmp_path: Path,
    cpu_settings: EncoderSettings,
    clip_encoder: Encoder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A start waits for the slower of index loading and model loading, not their sum."""
    settings = api_settings(tmp_path / "data", cpu_settings)
    with api_client(settings, {clip_encoder.name: clip_encoder}) as client:
        assert client.post("/v1/collections", json={"name": "photos"}).status_code == 201
        seeded = upload_photos(client, "photos", [1, 2, 3])
    opened = threading.Event()
    warm_up = SearchService.warm_up

    def warm_up_observed(service: SearchService) -> None:
        warm_up(service)
        opened.set()

    monkeypatch.setattr(SearchService, "warm_up", warm_up_observed)
    model = WarmsUpAfterTheIndexes(clip_encoder, opened)
    with api_client(settings, {clip_encoder.name: model}) as client:
        assert model.overlapped  # the indexes were open before the model's warm-up ended
        assert client.get("/health/ready").status_code == 200
        found = client.post("/v1/collections/photos/search", json={"image": photo_b64(2)})
        assert found.status_code == 200, found.text
        assert found.json()["hits"][0]["id"] == seeded[1]
        by_text = client.post("/v1/collections/photos/search", json={"text": "a red bicycle"})
        assert by_text.status_code == 200 and len(by_text.json()["hits"]) == 3


class FailsToWarmUp(WrappedEncoder):
    def warmup(self) -> None:
        raise ModelNotFoundError("model 'gone' was not found")


def test_a_model_that_fails_is_reported_without_waiting_for_the_indexes(
    tmp_path: Path,
    cpu_settings: EncoderSettings,
    clip_encoder: Encoder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The indexes may take minutes to rebuild: a start whose model fails says so at once, and
    the index loading it abandons closes its catalog when it ends."""
    release, closed = threading.Event(), threading.Event()
    warm_up, close = SearchService.warm_up, SearchService.close

    def slow_warm_up(service: SearchService) -> None:
        assert release.wait(timeout=120)
        warm_up(service)

    def observed_close(service: SearchService) -> None:
        close(service)
        closed.set()

    monkeypatch.setattr(SearchService, "warm_up", slow_warm_up)
    monkeypatch.setattr(SearchService, "close", observed_close)
    settings = api_settings(tmp_path / "data", cpu_settings)
    failing = {clip_encoder.name: FailsToWarmUp(clip_encoder)}
    # The test client groups lifespan errors.
    with pytest.raises(BaseException) as raised, api_client(settings, failing):
        pass
    if isinstance(raised.value, BaseExceptionGroup):
        assert raised.group_contains(ModelNotFoundError, match="'gone'")
    else:
        assert isinstance(raised.value, ModelNotFoundError)
    assert not release.is_set() and not closed.is_set()  # failed while the indexes still load
    release.set()
    assert closed.wait(timeout=60)


class SlowToWarmUp(WrappedEncoder):
    """Warms up only once ``release`` is set (a large model still loading)."""

    release = threading.Event()

    def warmup(self) -> None:
        assert self.release.wait(timeout=30)
        self.inner.warmup()


def test_indexes_that_fail_to_open_are_reported_without_waiting_for_the_models(
    tmp_path: Path, cpu_settings: EncoderSettings, clip_encoder: Encoder
) -> None:
    """The reverse of the case above: a catalog that cannot be opened (here a folder where the
    file belongs) fails the start at once, not after minutes of model loading."""
    data = tmp_path / "data"
    (data / "catalog.db").mkdir(parents=True)
    settings = api_settings(data, cpu_settings)
    SlowToWarmUp.release.clear()
    slow = {clip_encoder.name: SlowToWarmUp(clip_encoder)}
    try:
        with pytest.raises(BaseException) as raised, api_client(settings, slow):
            pass
        assert not SlowToWarmUp.release.is_set(), "the start waited for the models"
        assert "cannot open the catalog database" in repr(raised.value)
    finally:
        SlowToWarmUp.release.set()


def _serve_args(**values: object) -> argparse.Namespace:
    defaults: dict[str, object] = {
        "host": None,
        "port": None,
        "models": None,
        "device": None,
        "dtype": None,
        "batch_size": None,
    }
    defaults.update(values)
    return argparse.Namespace(**defaults)


def test_serve_creates_a_fresh_catalog_and_refuses_a_stale_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = tmp_path / "fresh"
    monkeypatch.setenv("VIZDEX_DATA_DIR", str(fresh))
    settings = serve.settings_from(_serve_args(port=9999))
    assert settings.port == 9999 and settings.search.catalog.database_url.endswith("catalog.db")
    serve.check_catalog(settings)
    assert (fresh / "catalog.db").exists()
    serve.check_catalog(settings)  # current: opens again quietly

    engine = create_engine(settings.search.catalog.database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))
    with pytest.raises(SchemaMismatchError):
        serve.check_catalog(settings)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))
    with pytest.raises((SchemaMismatchError, SchemaOutOfDateError)):
        serve.check_catalog(settings)
    engine.dispose()
