"""Domain errors -> HTTP, in one place. User input never turns into a 5xx."""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_403_FORBIDDEN,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_429_TOO_MANY_REQUESTS,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
    HTTP_507_INSUFFICIENT_STORAGE,
)

from vizdex.core.errors import (
    ConflictError,
    ImageRejectedError,
    InvalidInputError,
    NotFoundError,
    StorageFullError,
    UnavailableError,
    VizdexError,
    storage_error,
)
from vizdex.encoders.batching import QueueFullError, RequestCancelledError
from vizdex.encoders.cancellation import current_ticket
from vizdex.search import NotCaughtUpError, unavailable_database
from vizdex.web.metrics import Metrics

log = logging.getLogger(__name__)

# nginx's "client closed request": logged and counted, never read by anyone.
CLIENT_CLOSED = 499

# Image refusals carry their own status by reason code.
IMAGE_STATUS = {
    "too_large": HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    "too_many_pixels": HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    "unsupported_format": HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    "forbidden_path": HTTP_403_FORBIDDEN,
    "forbidden_url": HTTP_403_FORBIDDEN,
}

# Most specific first.
CLASS_STATUS: tuple[tuple[type[VizdexError], int], ...] = (
    (RequestCancelledError, CLIENT_CLOSED),
    (QueueFullError, HTTP_429_TOO_MANY_REQUESTS),
    (NotFoundError, HTTP_404_NOT_FOUND),
    (ConflictError, HTTP_409_CONFLICT),
    (StorageFullError, HTTP_507_INSUFFICIENT_STORAGE),
    (UnavailableError, HTTP_503_SERVICE_UNAVAILABLE),
    (InvalidInputError, HTTP_422_UNPROCESSABLE_ENTITY),
)

HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "overloaded",
    503: "unavailable",
}


def status_for(error: VizdexError) -> int:
    if isinstance(error, ImageRejectedError):
        return IMAGE_STATUS.get(error.code, HTTP_422_UNPROCESSABLE_ENTITY)
    for cls, status in CLASS_STATUS:
        if isinstance(error, cls):
            return status
    return HTTP_500_INTERNAL_SERVER_ERROR


def error_body(
    status: int,
    code: str,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    errors: list[Any] | None = None,
) -> dict[str, object]:
    body: dict[str, object] = {"status_code": status, "code": code, "detail": message}
    if details:
        body["details"] = details
    if errors:
        body["errors"] = errors
    return body


def _metrics(request: Request[Any, Any, Any]) -> Metrics | None:
    state = request.app.state.get("vizdex")
    return getattr(state, "metrics", None)


def _respond(
    request: Request[Any, Any, Any],
    status: int,
    code: str,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    errors: list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[object]:
    metrics = _metrics(request)
    if metrics is not None:
        metrics.error(status, code)
    return Response(
        error_body(status, code, message, details=details, errors=errors),
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def _client_gone() -> bool:
    ticket = current_ticket()
    return ticket is not None and ticket.cancelled


def vizdex_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[object]:
    assert isinstance(exc, VizdexError)
    status = status_for(exc)
    headers = None
    if isinstance(exc, (QueueFullError, NotCaughtUpError)):
        headers = {"Retry-After": str(exc.retry_after)}
    elif status == HTTP_503_SERVICE_UNAVAILABLE:
        headers = {"Retry-After": "5"}
    if status >= 500 and status not in (
        HTTP_503_SERVICE_UNAVAILABLE,
        HTTP_507_INSUFFICIENT_STORAGE,
    ):
        log.error("unmapped domain error on %s: %s", request.url.path, exc)
    details = {key: value for key, value in exc.details.items() if _json_safe(value)}
    return _respond(request, status, exc.code, exc.message, details=details, headers=headers)


def _json_safe(value: object) -> bool:
    return isinstance(value, str | int | float | bool | list | dict) or value is None


def http_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[object]:
    assert isinstance(exc, HTTPException)
    if exc.status_code >= 500 and _client_gone():
        return _respond(request, CLIENT_CLOSED, "client_disconnected", "the client disconnected")
    if _bad_path_parameter(exc):
        return _respond(request, HTTP_400_BAD_REQUEST, "invalid_request", _bad_path_value(exc))
    code = "invalid_request" if isinstance(exc, ValidationException) else "http_error"
    code = HTTP_CODES.get(exc.status_code, code)
    errors = exc.extra if isinstance(exc.extra, list) else None
    details = exc.extra if isinstance(exc.extra, dict) else None
    return _respond(
        request,
        exc.status_code,
        code,
        exc.detail,
        details=details,
        errors=errors,
        headers=dict(exc.headers) if exc.headers else None,
    )


def _bad_path_parameter(exc: HTTPException) -> bool:
    """Litestar's router answers 404 when a typed path parameter ({image_id:int}) does not
    parse, as when no route matches: the route exists and the value is wrong, as a number below
    1 would be (400). Its NotFoundException is raised from the parser's ValueError then; from
    another NotFoundException (a ValueError too) when no route matches."""
    cause = exc.__cause__
    return (
        isinstance(exc, NotFoundException)
        and isinstance(cause, ValueError)
        and not isinstance(cause, HTTPException)
    )


def _bad_path_value(exc: HTTPException) -> str:
    # Every typed path parameter is an id (int): int() names the text it could not read.
    found = re.search(r": (?P<value>'.*')$", str(exc.__cause__))
    value = found["value"] if found else "a path parameter"
    return f"{value} in the path is not a whole number (an id is 1 or more)"


def recursion_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[object]:
    # Only decoding absurdly nested JSON recurses this deep: the request's fault, not ours.
    log.warning("refused a too deeply nested body on %s", request.url.path)
    return _respond(request, 400, "invalid_request", "the JSON nests too deeply")


def unicode_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[object]:
    # Raised while decoding a body (JSON strings, multipart text fields) that is not UTF-8.
    return _respond(request, 400, "invalid_request", "the request is not valid UTF-8")


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[object]:
    if _client_gone():
        return _respond(request, CLIENT_CLOSED, "client_disconnected", "the client disconnected")
    state = request.app.state.get("vizdex")
    storage = storage_error(exc, getattr(getattr(state, "settings", None), "data_dir", None))
    if storage is not None:  # ENOSPC, EROFS from any write; SQLITE_FULL, _READONLY from the catalog
        log.error("%s on %s: %s", storage.code, request.url.path, exc)
        return vizdex_error_handler(request, storage)
    database = unavailable_database(exc)
    if database is not None:  # the server down, a dropped connection: the client may retry
        log.error("%s on %s: %s", database.code, request.url.path, exc)
        return vizdex_error_handler(request, database)
    log.exception("internal error on %s", request.url.path, exc_info=exc)
    return _respond(
        request, HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "internal server error"
    )


EXCEPTION_HANDLERS = {
    VizdexError: vizdex_error_handler,
    HTTPException: http_error_handler,
    RecursionError: recursion_error_handler,
    UnicodeDecodeError: unicode_error_handler,
    Exception: internal_error_handler,
}
