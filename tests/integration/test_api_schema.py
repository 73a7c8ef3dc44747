"""Schemathesis against a live server, as ``st run --checks all --mode all`` does.

Every check schemathesis has (server errors, statuses, content types, headers, response bodies,
schema-invalid requests refused, schema-valid ones accepted, required headers, methods and
``Allow``, use after delete, resources still there, ignored auth, ...) over every phase
(examples, coverage, fuzzing, stateful), in both generation modes, with the repository's
``schemathesis.toml``: its allowances for the rules JSON Schema cannot state (narrowed to their
reason codes by ``tests/support/schema_hooks.py``) and its collection ``photos`` with image 1,
which the fixtures seed, so image routes answer 200 as well as 404.

Two servers: without API keys (the schema declares no security, and none is asked for) and with
them (every ``/v1`` operation declares one; ``ignored_auth`` checks that a missing or wrong key
gets 401). Bounded by a fixed seed and a few examples per operation.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.api_helpers import LiveServer, api_settings, live_server, photo_jpeg
from vizdex.encoders.base import Encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.web.settings import AuthSettings

ROOT = Path(__file__).parents[2]
CONFIG = ROOT / "schemathesis.toml"
ADMIN_KEY = "schema-admin-key"
SEED = "20261201"
EXAMPLES = {"open": "25", "keys": "10"}
LABEL = re.compile(r'(\w+)="([^"]*)"')
IMAGE_ROUTES = (
    "/v1/collections/{name}/images/{image_id}",
    "/v1/collections/{name}/images/{image_id}/file",
    "/v1/collections/{name}/images/{image_id}/thumbnail",
)


def _collection_with_image(live: LiveServer, headers: dict[str, str], name: str) -> int:
    """A new collection ``name`` holding one image of its own; the image's id."""
    with requests.Session() as session:
        session.headers.update(headers)
        created = session.post(f"{live.url}/v1/collections", json={"name": name})
        created.raise_for_status()
        uploaded = session.post(
            f"{live.url}/v1/collections/{name}/images",
            files=[("images", ("photo.jpg", photo_jpeg(sum(map(ord, name))), "image/jpeg"))],
        )
        uploaded.raise_for_status()
        image_id: int = uploaded.json()["results"][0]["id"]
        return image_id


@pytest.fixture(scope="module", params=["open", "keys"])
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    cpu_settings: EncoderSettings,
    clip_encoder: Encoder,
    dino_encoder: Encoder,
) -> Iterator[tuple[str, LiveServer]]:
    settings = api_settings(tmp_path_factory.mktemp("schema") / "data", cpu_settings)
    headers: dict[str, str] = {}
    if request.param == "keys":
        settings = replace(settings, auth=AuthSettings(admin_keys=(ADMIN_KEY,)))
        headers = {"X-API-Key": ADMIN_KEY}
    models = {clip_encoder.name: clip_encoder, dino_encoder.name: dino_encoder}
    with live_server(settings, models) as live:
        # What schemathesis.toml names: `photos` holding image 1 (the first upload's).
        assert _collection_with_image(live, headers, "photos") == 1
        yield request.param, live


def run_schemathesis(url: str, config: Path, examples: str) -> subprocess.CompletedProcess[str]:
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", str(config)),
        *("run", f"{url}/schema/openapi.json", "--checks", "all", "--mode", "all"),
        *("-n", examples, "--seed", SEED, "--generation-database", "none"),
    ]
    # From the root: the config names its hooks file by a path relative to it.
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def config_for(kind: str, tmp_path: Path) -> Path:
    """The repository's config, its crash cache (for `st replay`) kept out of the tree; with keys,
    plus the key as the schema's `apiKey` scheme (so schemathesis knows the credential it removes
    or spoils to check that the server refuses the request)."""
    extra = f'\n[cache]\ndirectory = "{tmp_path / "cache"}"\n'
    if kind == "keys":
        extra += f'\n[auth.openapi.apiKey]\napi_key = "{ADMIN_KEY}"\n'
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.read_text() + extra)
    return config


def test_schema_declares_keys_only_where_they_are_asked_for(
    server: tuple[str, LiveServer],
) -> None:
    kind, live = server
    spec = requests.get(f"{live.url}/schema/openapi.json", timeout=30).json()
    operations = [
        (path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "patch", "delete")
    ]
    secured = {path for path, operation in operations if operation.get("security")}
    if kind == "open":
        assert not secured and "securitySchemes" not in spec.get("components", {})
    else:
        assert secured == {path for path, _ in operations if not path.startswith("/health")}
        assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}


def test_files_are_never_sniffed_or_run(server: tuple[str, LiveServer]) -> None:
    kind, live = server
    headers = {"X-API-Key": ADMIN_KEY} if kind == "keys" else {}
    image_id = _collection_with_image(live, headers, "sniffing")
    for kind_of_file in ("file", "thumbnail"):
        answer = requests.get(
            f"{live.url}/v1/collections/sniffing/images/{image_id}/{kind_of_file}",
            headers=headers,
            timeout=30,
        )
        assert answer.status_code == 200
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"


def test_options_lists_every_method_of_a_path(server: tuple[str, LiveServer]) -> None:
    kind, live = server
    headers = {"X-API-Key": ADMIN_KEY} if kind == "keys" else {}
    image = f"/v1/collections/allow/images/{_collection_with_image(live, headers, 'allow')}"
    expected = {
        "/v1/collections": "GET, OPTIONS, POST",
        "/v1/collections/allow": "DELETE, GET, OPTIONS, PATCH",
        "/v1/collections/allow/models": "DELETE, OPTIONS, POST",
        "/v1/collections/allow/images": "GET, OPTIONS, POST",
        image: "DELETE, GET, OPTIONS, PATCH",
        f"{image}/file": "GET, OPTIONS",
        "/health/live": "GET, OPTIONS",
    }
    for path, allow in expected.items():
        answer = requests.options(f"{live.url}{path}", headers=headers, timeout=30)
        assert (answer.status_code, answer.headers.get("Allow")) == (204, allow), path


def test_names_and_keys_end_where_the_schema_says(server: tuple[str, LiveServer]) -> None:
    """The schema's patterns end at the string's end; `$` in Python also before a final "\\n"."""
    kind, live = server
    headers = {"X-API-Key": ADMIN_KEY} if kind == "keys" else {}
    url = f"{live.url}/v1/collections"
    refused = requests.post(url, json={"name": "trailing\n"}, headers=headers, timeout=30)
    assert (refused.status_code, refused.json()["code"]) == (422, "invalid_input")
    query: dict[str, Any] = {"text": "a bike", "filter": {"metadata": {"key\n": 1}}}
    refused = requests.post(f"{url}/photos/search", json=query, headers=headers, timeout=30)
    assert (refused.status_code, refused.json()["code"]) == (422, "invalid_query")


def test_server_and_schema_agree(server: tuple[str, LiveServer], tmp_path: Path) -> None:
    kind, live = server
    result = run_schemathesis(live.url, config_for(kind, tmp_path), EXAMPLES[kind])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20_000:]
    counts = request_counts(live, ADMIN_KEY if kind == "keys" else None)
    spec = requests.get(f"{live.url}/schema/openapi.json", timeout=30).json()
    documented = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in ("get", "post", "patch", "delete")
    }
    sent = {(method, route) for method, route, _ in counts}
    assert documented <= sent, f"never sent: {sorted(documented - sent)}"
    if kind == "keys":  # enforcement was probed: requests without a key or with a wrong one
        assert sum(n for (_, _, status), n in counts.items() if status == "401") > 20
    else:  # the seeded image is reached, not only missed
        for route in IMAGE_ROUTES:
            assert counts.get(("GET", route, "200"), 0) > 0, route


def request_counts(live: LiveServer, key: str | None) -> dict[tuple[str, str, str], float]:
    """Requests the server handled, by (method, route template, status), from its metrics."""
    headers = {"X-API-Key": key} if key else {}
    text = requests.get(f"{live.url}/metrics", headers=headers, timeout=30).text
    counts: dict[tuple[str, str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("vizdex_http_request_duration_seconds_count{"):
            labels, value = line.rsplit(" ", 1)
            found = dict(LABEL.findall(labels))
            counts[(found["method"], found["route"], found["status"])] = float(value)
    return counts
