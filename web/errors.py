"""Domain errors -> HTTP, in one place. User input never turns into a 5xx."""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import (
    HTTP_403_FORBIDDEN,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)

from encoders.errors import (
    ConflictError,
    ImageRejectedError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
    VizdexError,
)

log = logging.getLogger(__name__)

# Image refusals carry their own status by reason code.
IMAGE_STATUS = {
    "too_large": HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    "too_many_pixels": HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    "unsupported_format": HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    "forbidden_path": HTTP_403_FORBIDDEN,
    "forbidden_url": HTTP_403_FORBIDDEN,
}

CLASS_STATUS: tuple[tuple[type[VizdexError], int], ...] = (
    (NotFoundError, HTTP_404_NOT_FOUND),
    (ConflictError, HTTP_409_CONFLICT),
    (UnavailableError, HTTP_503_SERVICE_UNAVAILABLE),
    (InvalidInputError, HTTP_422_UNPROCESSABLE_ENTITY),
)


def status_for(error: VizdexError) -> int:
    if isinstance(error, ImageRejectedError):
        return IMAGE_STATUS.get(error.code, HTTP_422_UNPROCESSABLE_ENTITY)
    for cls, status in CLASS_STATUS:
        if isinstance(error, cls):
            return status
    return HTTP_500_INTERNAL_SERVER_ERROR


def error_body(status: int, code: str, message: str, **details: object) -> dict[str, object]:
    return {"status_code": status, "code": code, "detail": message, **details}


def vizdex_error_handler(
    request: Request[Any, Any, Any], exc: Exception
) -> Response[object]:
    assert isinstance(exc, VizdexError)
    status = status_for(exc)
    if status >= 500:
        log.error("unhandled domain error on %s: %s", request.url.path, exc)
    return Response(
        error_body(status, exc.code, exc.message, **exc.details),
        status_code=status,
        media_type=MediaType.JSON,
    )


def http_error_handler(
    request: Request[Any, Any, Any], exc: Exception
) -> Response[object]:
    assert isinstance(exc, HTTPException)
    code = "invalid_request" if isinstance(exc, ValidationException) else "http_error"
    extra = {"errors": exc.extra} if exc.extra else {}
    return Response(
        error_body(exc.status_code, code, exc.detail, **extra),
        status_code=exc.status_code,
        media_type=MediaType.JSON,
        headers=exc.headers,
    )


def internal_error_handler(
    request: Request[Any, Any, Any], exc: Exception
) -> Response[object]:
    log.exception("internal error on %s", request.url.path, exc_info=exc)
    return Response(
        error_body(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "internal server error"),
        status_code=HTTP_500_INTERNAL_SERVER_ERROR,
        media_type=MediaType.JSON,
    )


EXCEPTION_HANDLERS = {
    VizdexError: vizdex_error_handler,
    HTTPException: http_error_handler,
    Exception: internal_error_handler,
}
