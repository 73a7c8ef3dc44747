"""Probes (no auth; they reveal only up/ready) and Prometheus metrics."""

from __future__ import annotations

import logging

import msgspec
from litestar import Response, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from sqlalchemy import text

from vizdex.web.auth import READ_ONLY, api_key_guard
from vizdex.web.metrics import CONTENT_TYPE
from vizdex.web.openapi import error_responses
from vizdex.web.state import ServiceState, Vizdex

log = logging.getLogger(__name__)


class Probe(msgspec.Struct):
    status: str


def _database_reachable(vizdex: ServiceState) -> bool:
    service = vizdex.search_service
    if service is None:
        return False
    try:
        with service.catalog.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
        log.warning("readiness: the catalog database is unreachable", exc_info=True)
        return False
    return True


@get("/health/live", sync_to_thread=False, tags=["health"], summary="Liveness probe")
def live() -> Probe:
    return Probe(status="ok")


@get(
    "/health/ready",
    sync_to_thread=True,
    tags=["health"],
    summary="Readiness probe",
    description="200 once models are warmed, indexes loaded and the database answers; else 503.",
    responses={503: ResponseSpec(Probe, description="Not ready yet", generate_examples=False)},
)
def ready(vizdex: Vizdex) -> Response[Probe]:
    if vizdex.ready and _database_reachable(vizdex):
        return Response(Probe(status="ready"), status_code=HTTP_200_OK)
    return Response(Probe(status="starting"), status_code=HTTP_503_SERVICE_UNAVAILABLE)


@get(
    "/metrics",
    sync_to_thread=True,
    tags=["health"],
    summary="Prometheus metrics",
    media_type=CONTENT_TYPE,
    guards=[api_key_guard],
    opt=READ_ONLY,
    responses=error_responses(401, 403),
)
def metrics(vizdex: Vizdex) -> Response[bytes]:
    return Response(vizdex.metrics.render(), media_type=CONTENT_TYPE)
