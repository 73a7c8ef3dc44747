"""Property-based run of the OpenAPI schema against a live server (schemathesis).

Every operation gets generated requests, valid and invalid; no answer may be a server error or
break the documented status codes, content types and response schemas. Bounded (examples per
operation) so the whole run takes well under a minute on two cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.api_helpers import LiveServer, api_settings, live_server, photo_b64
from vizdex.encoders.base import Encoder
from vizdex.encoders.settings import EncoderSettings

EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 12}
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    cpu_settings: EncoderSettings,
    clip_encoder: Encoder,
    dino_encoder: Encoder,
) -> Iterator[LiveServer]:
    data_dir: Path = tmp_path_factory.mktemp("schema") / "data"
    models = {clip_encoder.name: clip_encoder, dino_encoder.name: dino_encoder}
    with live_server(api_settings(data_dir, cpu_settings), models) as live:
        with requests.Session() as session:
            session.post(f"{live.url}/v1/collections", json={"name": "photos"}).raise_for_status()
            # Something to find: fuzzed ids and searches then reach real rows, not only 404s.
            session.post(
                f"{live.url}/v1/vision/encode", json={"images": [photo_b64(1)]}
            ).raise_for_status()
        yield live


def operations(server: LiveServer) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{server.url}/schema/openapi.json")
    schema.config.base_url = server.url
    found = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the schema has an invalid operation: {result.err()}"
        found.append(result.ok())
    return found


@pytest.mark.parametrize("mode", list(EXAMPLES), ids=lambda mode: mode.value)
def test_schema_properties(server: LiveServer, mode: GenerationMode) -> None:
    found = operations(server)
    assert len(found) >= 20
    session = requests.Session()
    failures: list[str] = []
    for operation in found:

        @settings(
            max_examples=EXAMPLES[mode],
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def exercise(case: Any) -> None:
            case.call_and_validate(base_url=server.url, session=session, checks=CHECKS)

        try:
            exercise()
        except Unsatisfiable:
            continue  # nothing to make invalid (no parameters, no body) in negative mode
        except Exception as error:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {error}")
    assert not failures, "\n\n".join(failures)
    assert handled_requests(session, server) > 10 * len(found)  # the cases really were sent


def handled_requests(session: requests.Session, server: LiveServer) -> float:
    prefix = "vizdex_http_request_duration_seconds_count"
    lines = session.get(f"{server.url}/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))
