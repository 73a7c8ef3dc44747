"""Probes (no auth; they reveal only up/ready) and Prometheus metrics."""

from __future__ import annotations

import msgspec
from litestar import Response, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from vizdex.search import CollectionsService
from vizdex.web.auth import READ_ONLY, api_key_guard
from vizdex.web.metrics import CONTENT_TYPE
from vizdex.web.openapi import error_responses
from vizdex.web.routing import route
from vizdex.web.state import ServiceState, Vizdex


class Probe(msgspec.Struct):
    status: str


def _database_reachable(vizdex: ServiceState) -> bool:
    service = vizdex.search_service  # read once: shutdown may clear it meanwhile
    return service is not None and CollectionsService(service).database_reachable()


@route(get, "/health/live", summary="Liveness probe", sync_to_thread=False)
def live() -> Probe:
    return Probe(status="ok")


@route(
    get,
    "/health/ready",
    summary="Readiness probe",
    description="200 once models are warmed, indexes loaded and the database answers; else 503.",
    responses={503: ResponseSpec(Probe, description="Not ready yet", generate_examples=False)},
)
def ready(vizdex: Vizdex) -> Response[Probe]:
    if vizdex.ready and _database_reachable(vizdex):
        return Response(Probe(status="ready"), status_code=HTTP_200_OK)
    return Response(Probe(status="starting"), status_code=HTTP_503_SERVICE_UNAVAILABLE)


@route(
    get,
    "/metrics",
    summary="Prometheus metrics",
    media_type=CONTENT_TYPE,
    guards=[api_key_guard],
    opt=READ_ONLY,
    responses=error_responses(401, 403),
)
def metrics(vizdex: Vizdex) -> Response[bytes]:
    return Response(vizdex.metrics.render(), media_type=CONTENT_TYPE)
