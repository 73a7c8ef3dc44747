"""How routes are declared: what every route of an area or of a kind shares is said once, here.

Litestar layers (``Router``, ``Controller``) carry ``tags``, ``opt``, ``guards`` and body limits,
but ``responses`` and ``sync_to_thread`` exist only on handlers. So each API area is one Router
(``area``) that carries its OpenAPI tag, and ``route`` fills a handler's arguments from a preset:

- ``READS``: what is stored (collections, images, jobs); a read-only key may call them.
- ``QUERIES``: POSTs that change nothing (encode, similarity, search): 200, read-only key.
- ``WRITES``: changes to collections and images; they need an admin key.

A sync handler runs in a worker thread (it waits on the catalog, an index or a model's queue)
unless it says ``sync_to_thread=False``; an async one runs on the event loop (Litestar warns
about ``sync_to_thread`` there).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Final

from litestar import Router
from litestar.handlers import HTTPRouteHandler
from litestar.types import AnyCallable, ControllerRouterHandler

from vizdex.web.auth import READ_ONLY
from vizdex.web.openapi import ENCODE, READ, WRITE, error_responses

READS: Final[Mapping[str, Any]] = {"opt": READ_ONLY, "responses": error_responses(*READ)}
QUERIES: Final[Mapping[str, Any]] = {
    "status_code": 200,
    "opt": READ_ONLY,
    "responses": error_responses(*ENCODE),
}
WRITES: Final[Mapping[str, Any]] = {"responses": error_responses(*WRITE)}


def route(
    method: Callable[..., HTTPRouteHandler],
    path: str,
    preset: Mapping[str, Any] | None = None,
    **options: Any,
) -> Callable[[AnyCallable], HTTPRouteHandler]:
    """``@method(path, **preset, **options)``; ``options`` win over the preset."""

    def decorate(handler: AnyCallable) -> HTTPRouteHandler:
        arguments = {**(preset or {}), **options}
        if not inspect.iscoroutinefunction(handler):
            arguments.setdefault("sync_to_thread", True)
        return method(path, **arguments)(handler)

    return decorate


def area(tag: str, *handlers: ControllerRouterHandler) -> Router:
    """One API area's handlers under a Router that gives them its tag (Litestar adds a
    handler's own ``tags`` to it and sorts them)."""
    return Router("/", route_handlers=list(handlers), tags=[tag])
