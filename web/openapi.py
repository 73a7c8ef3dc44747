"""OpenAPI helpers: error responses declared per route, request bodies, security.

Every JSON request body is documented with msgspec's own schema of its Struct (what msgspec
validates) and the Struct's ``schema_rules`` (what its handler checks in code): see
``web/schemas.py``. ``routing.route`` does this for every ``data: JSONBody[...]`` handler; the
routes that take JSON *or* multipart read the body themselves (Litestar binds one encoding per
handler) and say so with :func:`body_operation`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import msgspec
from litestar import Request, Router
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Components,
    Encoding,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    RequestBody,
    Schema,
    SecurityRequirement,
    SecurityScheme,
)

from vizdex.web.schemas import ErrorBody, JsonSchema

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


def _struct_types(kind: Any) -> Iterator[type[msgspec.Struct]]:
    """Every Struct type ``kind`` holds, at any depth."""
    seen: set[type] = set()
    stack: list[Any] = [msgspec.inspect.type_info(kind)]
    while stack:
        info = stack.pop()
        if isinstance(info, msgspec.inspect.StructType):
            if info.cls in seen:
                continue
            seen.add(info.cls)
            yield info.cls
            stack.extend(field.type for field in info.fields)
            continue
        for name in info.__struct_fields__:  # containers, unions, Metadata wrappers
            value = getattr(info, name)
            values = value if isinstance(value, tuple) else (value,)
            stack.extend(v for v in values if isinstance(v, msgspec.inspect.Type))


def json_schema(kind: Any) -> JsonSchema:
    """msgspec's JSON schema of ``kind`` with each Struct's ``schema_rules``, ``$ref``s inlined
    (no recursive types here)."""
    schema = msgspec.json.schema(kind)
    defs: dict[str, JsonSchema] = schema.pop("$defs", {})
    by_title = {definition.get("title"): definition for definition in defs.values()}
    for struct in _struct_types(kind):
        rules = getattr(struct, "schema_rules", ())
        if rules:
            by_title[struct.__name__].setdefault("allOf", []).extend(rules)
    inlined: JsonSchema = _inline(schema, defs)
    return inlined


FILE_PART: JsonSchema = {"type": "string", "contentMediaType": "application/octet-stream"}
FORM_MODEL: JsonSchema = {
    "type": "string",
    "maxLength": 1000,
    "description": "a loaded model's name; empty or left out: the default model",
}


def multipart_schema(files: str, max_files: int, fields: Mapping[str, JsonSchema]) -> JsonSchema:
    """A form with 1 to ``max_files`` file parts (named ``files`` here; the server takes every
    file part, whatever its name) and text ``fields``."""
    return {
        "type": "object",
        "properties": {
            files: {"type": "array", "items": FILE_PART, "minItems": 1, "maxItems": max_files},
            **fields,
        },
        "required": [files],
    }


def body_operation(
    json_body: JsonSchema | type,
    multipart: JsonSchema | None = None,
    *,
    json_fields: Mapping[str, str] | None = None,
) -> type[Operation]:
    """An ``operation_class`` documenting a JSON body (and optionally a multipart form whose
    ``json_fields`` are JSON text of that content type)."""
    body = json_body if isinstance(json_body, dict) else json_schema(json_body)
    content: dict[str, tuple[JsonSchema, dict[str, Encoding] | None]] = {
        "application/json": (body, None)
    }
    if multipart is not None:
        encoding = {
            name: Encoding(content_type=media) for name, media in (json_fields or {}).items()
        }
        content["multipart/form-data"] = (multipart, encoding or None)

    @dataclass
    class BodyOperation(Operation):
        def __post_init__(self) -> None:
            # Plain dicts serialise as they are; Litestar's Schema type cannot hold msgspec's.
            self.request_body = RequestBody(
                required=True,
                content={
                    media: OpenAPIMediaType(schema=cast(Schema, schema), encoding=encoding)
                    for media, (schema, encoding) in content.items()
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
SECURITY: list[SecurityRequirement] = [{"bearer": []}, {"apiKey": []}]


def security(enabled: bool) -> tuple[list[Components], list[SecurityRequirement] | None]:
    """(components, security) of an app: a key is declared required only where keys are
    configured, since only there is one asked for."""
    return ([SECURITY_COMPONENTS], SECURITY) if enabled else ([], None)


_FINISHED = "openapi_schema_finished"


def _references(node: Any) -> Iterator[str]:
    """The component names ``node`` refers to, at any depth."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            yield ref.removeprefix("#/components/schemas/")
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def _finish_schema(request: Request[Any, Any, Any]) -> None:
    """Once per app, before its schema is first served: drop the components nothing refers to
    (Litestar writes one for each ``data`` parameter's type, looser than the body schema
    ``body_operation`` puts in its place)."""
    openapi = request.app.openapi_schema
    schemas = openapi.components.schemas
    if not schemas or request.app.state.get(_FINISHED):
        return
    request.app.state[_FINISHED] = True
    document = openapi.to_schema()
    defined: dict[str, Any] = document.get("components", {}).get("schemas", {})
    used: set[str] = set()
    pending = list(_references(document.get("paths", {})))
    while pending:
        name = pending.pop()
        if name not in used:
            used.add(name)
            pending.extend(_references(defined.get(name, {})))
    for name in set(schemas) - used:
        schemas.pop(name, None)


def schema_router(path: str) -> Router:
    """The router that serves the schema and its pages (Litestar adds their handlers)."""
    return Router(path, route_handlers=[], include_in_schema=False, before_request=_finish_schema)


@dataclass
class NoContentOperation(Operation):
    """A 204 handler that sets headers returns ``Response[None]``, which Litestar documents as
    a JSON ``null`` body; 204 has no body at all, as with a plain ``None``."""

    def __post_init__(self) -> None:
        for status, response in (self.responses or {}).items():
            if status == "204" and isinstance(response, OpenAPIResponse):
                response.content = None
