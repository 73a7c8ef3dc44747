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


class Readiness(msgspec.Struct, omit_defaults=True):
    """``lag``: changes in the catalog (sequence numbers, summed over collections) that this
    replica's loaded indexes have not applied yet, 0 when caught up; ``collections_behind``: how
    many collections that is. Totals only: the probe needs no key, so it names no collection.
    A collection whose indexes are not loaded yet counts as caught up (it loads current)."""

    status: str
    lag: int | None = None
    collections_behind: int | None = None


def _lags(vizdex: ServiceState) -> list[int]:
    service = vizdex.search_service  # read once: shutdown may clear it meanwhile
    if service is None:
        return []
    return [
        max(0, record.last_seq - applied)
        for record, applied in service.lag()
        if applied is not None
    ]


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
    description="200 once models are warmed, indexes loaded and the database answers, with this "
    "replica's lag behind the catalog's change feed; else 503.",
    responses={503: ResponseSpec(Readiness, description="Not ready yet", generate_examples=False)},
)
def ready(vizdex: Vizdex) -> Response[Readiness]:
    if vizdex.ready and _database_reachable(vizdex):
        lags = _lags(vizdex)
        ready = Readiness(
            status="ready", lag=sum(lags), collections_behind=sum(1 for lag in lags if lag)
        )
        return Response(ready, status_code=HTTP_200_OK)
    return Response(Readiness(status="starting"), status_code=HTTP_503_SERVICE_UNAVAILABLE)


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
