"""How routes are declared: what every route of an area or of a kind shares is said once, here.

Litestar layers (``Router``, ``Controller``) carry ``tags``, ``opt``, ``guards`` and body limits,
but ``responses`` and ``sync_to_thread`` exist only on handlers. So each API area is one Router
(``area``) that carries its OpenAPI tag, and ``route`` fills a handler's arguments from a preset:

- ``READS``: what is stored (collections, images, jobs); a read-only key may call them.
- ``QUERIES``: POSTs that change nothing (encode, similarity, search): 200, read-only key.
- ``WRITES``: changes to collections and images; they need an admin key.

A sync handler runs in a worker thread (it waits on the catalog, an index or a model's queue)
unless it says ``sync_to_thread=False``; an async one runs on the event loop (Litestar warns
about ``sync_to_thread`` there). A handler taking ``data: JSONBody[T]`` has its body documented
with ``T``'s msgspec schema and rules (``openapi.body_operation``), unless it says otherwise.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final

from litestar import Request, Response, Router
from litestar.enums import HttpMethod
from litestar.handlers import HTTPRouteHandler
from litestar.params import BodyKwarg
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_204_NO_CONTENT
from litestar.types import AnyCallable, ControllerRouterHandler

from vizdex.web.auth import READ_ONLY
from vizdex.web.openapi import ENCODE, READ, WRITE, body_operation, error_responses

READS: Final[Mapping[str, Any]] = {"opt": READ_ONLY, "responses": error_responses(*READ)}
QUERIES: Final[Mapping[str, Any]] = {
    "status_code": 200,
    "opt": READ_ONLY,
    "responses": error_responses(*ENCODE),
}
WRITES: Final[Mapping[str, Any]] = {"responses": error_responses(*WRITE)}


def _json_body(handler: AnyCallable) -> type | None:
    """``T`` of a ``data: JSONBody[T]`` parameter, if the handler has one."""
    hint = typing.get_type_hints(handler, include_extras=True).get("data")
    if typing.get_origin(hint) is not Annotated:
        return None
    body, *metadata = typing.get_args(hint)
    return body if any(isinstance(meta, BodyKwarg) for meta in metadata) else None


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
        body = _json_body(handler)
        if body is not None:
            arguments.setdefault("operation_class", body_operation(body))
        return method(path, **arguments)(handler)

    return decorate


def allowed_methods(request: Request[Any, Any, Any]) -> str:
    """The ``Allow`` header of the request's path: every method the app routes there."""
    template = request.scope["path_template"]
    methods = {
        method
        for found in request.app.routes
        if isinstance(found, HTTPRoute) and found.path_format == template
        for method in found.methods
    }
    return ", ".join(sorted(methods))


def options(request: Request[Any, Any, Any]) -> Response[None]:
    return Response(
        None, status_code=HTTP_204_NO_CONTENT, headers={"Allow": allowed_methods(request)}
    )


def _options_handler(path: str) -> HTTPRouteHandler:
    return HTTPRouteHandler(
        path=path,
        http_method=[HttpMethod.OPTIONS],
        include_in_schema=False,
        sync_to_thread=False,
        opt=READ_ONLY,
    )(options)


def area(tag: str, *handlers: ControllerRouterHandler) -> Router:
    """One API area's handlers under a Router that gives them its tag (Litestar adds a
    handler's own ``tags`` to it and sorts them).

    Litestar 2 writes a path's automatic ``OPTIONS`` answer when the path's first handler is
    registered, so a path whose methods are separate handlers would list only the first one's
    (litestar#4169). Each path gets its own ``OPTIONS`` handler first, answering from the app's
    final routes.
    """
    paths = sorted(
        {
            path
            for handler in handlers
            if isinstance(handler, HTTPRouteHandler)
            for path in handler.paths
        }
    )
    return Router("/", route_handlers=[*map(_options_handler, paths), *handlers], tags=[tag])
