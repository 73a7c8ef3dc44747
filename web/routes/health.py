"""Liveness and readiness probes: no auth, reveal nothing but up/ready."""

from __future__ import annotations

from litestar import Response, get
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from web.state import ServiceState


@get("/health/live", sync_to_thread=False, include_in_schema=True)
def live() -> dict[str, str]:
    return {"status": "ok"}


@get("/health/ready", sync_to_thread=False)
def ready(vizdex: ServiceState) -> Response[dict[str, str]]:
    if vizdex.ready:
        return Response({"status": "ready"}, status_code=HTTP_200_OK)
    return Response({"status": "starting"}, status_code=HTTP_503_SERVICE_UNAVAILABLE)
