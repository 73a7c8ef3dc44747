"""The auth matrix on every route: no key, wrong key, read key, admin key."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import TestClient

from tests.support.api_helpers import (
    api_client,
    api_settings,
    database_unreachable,
    photo_b64,
    state_of,
)
from vizdex.encoders.base import Encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.web.settings import AuthSettings

ADMIN, READER = "admin-secret", "reader-secret"
PUBLIC = {"/health/live", "/health/ready", "/", "/static/{file_path}"}
# Routes a read key may use (everything else needs an admin key).
READ_ROUTES = {
    ("GET", "/metrics"),
    ("GET", "/v1/models"),
    ("POST", "/v1/vision/encode"),
    ("POST", "/v1/vision/similarity"),
    ("POST", "/v1/vision/batch"),
    ("POST", "/v1/multimodal/encode"),
    ("POST", "/v1/multimodal/match"),
    ("POST", "/v1/multimodal/search"),
    ("POST", "/v1/collections/{name}/search"),
    # A duplicate scan reads the collection (its job is bookkeeping); deleting goes through DELETE.
    ("POST", "/v1/collections/{name}/duplicates"),
    ("GET", "/v1/collections/{name}/duplicates/{job_id}"),
    ("GET", "/v1/collections"),
    ("GET", "/v1/collections/{name}"),
    ("GET", "/v1/collections/{name}/images"),
    ("GET", "/v1/collections/{name}/images/{image_id}"),
    ("GET", "/v1/collections/{name}/images/{image_id}/file"),
    ("GET", "/v1/collections/{name}/images/{image_id}/thumbnail"),
    ("GET", "/v1/jobs/{job_id}"),
}


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory,
    cpu_settings: EncoderSettings,
    clip_encoder: Encoder,
) -> Iterator[TestClient[Litestar]]:
    settings = api_settings(
        tmp_path_factory.mktemp("auth") / "data",
        cpu_settings,
        auth=AuthSettings(admin_keys=(ADMIN, "second-admin"), read_keys=(READER,)),
    )
    with api_client(settings, {clip_encoder.name: clip_encoder}) as test_client:
        yield test_client


def routes(app: Litestar) -> list[tuple[str, str]]:
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path.startswith("/schema"):
            continue
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for method in route.methods:
            if method not in ("HEAD", "OPTIONS"):
                found.append((method, path))
    return sorted(found)


def concrete(path: str) -> str:
    return path.replace("{name}", "photos").replace("{image_id}", "1").replace("{job_id}", "1")


BODIES = {
    "/v1/vision/encode": {"images": [photo_b64(1)]},
    "/v1/collections": {"name": "made-by-admin"},
    "/v1/collections/{name}/search": {"text": "a"},
    "/v1/multimodal/search": {"collection": "photos", "text": "a"},
}


def call(client: TestClient[Litestar], method: str, path: str, **headers: str) -> int:
    body = BODIES.get(path, {"images": [photo_b64(1)], "texts": ["a"], "metadata": {}})
    if method in ("GET", "DELETE"):
        return client.request(method, concrete(path), headers=headers).status_code
    return client.request(method, concrete(path), json=body, headers=headers).status_code


def test_every_route_is_classified(client: TestClient[Litestar]) -> None:
    listed = routes(client.app)
    assert len(listed) >= 20
    for _method, path in listed:
        if path in PUBLIC:
            continue
        assert path.startswith("/v1/") or path == "/metrics", path


def test_probes_and_schema_need_no_key(client: TestClient[Litestar]) -> None:
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").json() == {
        "status": "ready",
        "lag": 0,
        "collections_behind": 0,
    }
    assert client.get("/schema/openapi.json").status_code == 200
    # Not ready is said without a key too (503, not 401): the probe really asks the database.
    with database_unreachable(state_of(client.app)):
        not_ready = client.get("/health/ready")
        assert not_ready.status_code == 503 and not_ready.json() == {"status": "starting"}
    assert client.get("/health/ready").json() == {
        "status": "ready",
        "lag": 0,
        "collections_behind": 0,
    }


def test_matrix(client: TestClient[Litestar]) -> None:
    problems = []
    for method, path in routes(client.app):
        if path in PUBLIC:
            continue
        is_read = (method, path) in READ_ROUTES
        none = call(client, method, path)
        wrong = call(client, method, path, authorization="Bearer nope")
        reader = call(client, method, path, authorization=f"Bearer {READER}")
        admin = call(client, method, path, **{"x-api-key": ADMIN})
        if none != 401 or wrong != 401:
            problems.append(f"{method} {path}: no key {none}, wrong key {wrong}")
        if is_read and reader in (401, 403):
            problems.append(f"{method} {path}: read key refused ({reader})")
        if not is_read and reader != 403:
            problems.append(f"{method} {path}: read key allowed to write ({reader})")
        if admin in (401, 403):
            problems.append(f"{method} {path}: admin key refused ({admin})")
        if max(none, wrong, reader, admin) >= 500:
            problems.append(f"{method} {path}: server error")
    assert not problems, "\n".join(problems)


def test_refusals_explain_themselves(client: TestClient[Litestar]) -> None:
    missing = client.get("/v1/collections")
    assert missing.status_code == 401 and missing.json()["code"] == "unauthorized"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    denied = client.post("/v1/collections", json={"name": "x"}, headers={"x-api-key": READER})
    assert denied.status_code == 403 and "admin key" in denied.json()["detail"]
    for header in ({"authorization": "Basic abc"}, {"authorization": "Bearer "}, {"x-api-key": ""}):
        assert client.get("/v1/models", headers=header).status_code == 401
    assert (
        client.get("/v1/models", headers={"authorization": "bearer second-admin"}).status_code
        == 200
    )
