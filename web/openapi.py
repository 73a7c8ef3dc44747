"""OpenAPI helpers: error responses declared per route, and bodies we parse ourselves.

Routes that take JSON *or* multipart read the body themselves (Litestar binds one encoding per
handler); :func:`body_operation` documents both, with the JSON schema msgspec itself validates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    Operation,
    RequestBody,
    Schema,
    SecurityScheme,
)

from vizdex.web.schemas import ErrorBody

ERROR_DESCRIPTIONS = {
    400: "The request is malformed: bad JSON, a wrong type or a missing field",
    401: "An API key is required, or the one sent is not valid",
    403: "The API key may not do this, or the image path/URL is not allowed",
    404: "The model, collection, image or job does not exist",
    409: "The request conflicts with existing state (e.g. the collection exists)",
    413: "The body or an image is too large",
    415: "The image format is not accepted",
    422: "The request is well-formed but its values cannot be used",
    429: "Too much work is queued; retry after the Retry-After header's seconds",
    503: "The service cannot do this right now (starting, out of memory); retry later",
    507: "The disk is full: nothing of the request was kept; free some space and retry",
}

# What any guarded /v1 route can answer, on top of its own errors.
GUARDED = (400, 401, 403)
ENCODE = (*GUARDED, 404, 413, 415, 422, 429, 503)
READ = (*GUARDED, 404, 503)
WRITE = (*GUARDED, 404, 409, 413, 422, 503, 507)


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    return {
        status: ResponseSpec(
            data_container=ErrorBody,
            description=ERROR_DESCRIPTIONS[status],
            generate_examples=False,
        )
        for status in sorted(set(statuses))
    }


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(value, defs) for value in node]
    return node


def json_schema(kind: type) -> dict[str, Any]:
    """msgspec's JSON schema of ``kind``, every ``$ref`` inlined (no recursive types here)."""
    schema = msgspec.json.schema(kind)
    defs = schema.pop("$defs", {})
    inlined: dict[str, Any] = _inline(schema, defs)
    return inlined


def multipart_schema(files: str, fields: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A form with repeated file parts named ``files`` and text ``fields``."""
    return {
        "type": "object",
        "properties": {
            files: {
                "type": "array",
                "items": {"type": "string", "contentMediaType": "application/octet-stream"},
            },
            **fields,
        },
        "required": [files],
    }


def body_operation(json_body: type, multipart: dict[str, Any] | None = None) -> type[Operation]:
    """An ``operation_class`` documenting a JSON body (and optionally a multipart form)."""
    content = {"application/json": json_schema(json_body)}
    if multipart is not None:
        content["multipart/form-data"] = multipart

    @dataclass
    class BodyOperation(Operation):
        def __post_init__(self) -> None:
            # Plain dicts serialise as they are; Litestar's Schema type cannot hold msgspec's.
            self.request_body = RequestBody(
                required=True,
                content={
                    media: OpenAPIMediaType(schema=cast(Schema, schema))
                    for media, schema in content.items()
                },
            )

    return BodyOperation


SECURITY_COMPONENTS = Components(
    security_schemes={
        "bearer": SecurityScheme(
            type="http", scheme="bearer", description="An API key as a bearer token"
        ),
        "apiKey": SecurityScheme(
            type="apiKey", name="X-API-Key", security_scheme_in="header", description="An API key"
        ),
    }
)
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
