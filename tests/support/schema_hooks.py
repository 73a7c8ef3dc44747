"""Schemathesis hooks for vizdex (``schemathesis.toml`` loads them; run ``st`` from the root).

Two checks. The OpenAPI schema says every rule JSON Schema can express; a few refusals of
schema-valid requests depend on what no schema can hold: whether bytes decode as an image,
whether a FAISS factory string parses, a query vector's length against its model, a date range's
order, the collection's own models. ``schemathesis.toml`` allows their statuses (413, 415, 422)
on the operations concerned; ``refused_only_for_inexpressible_rules`` narrows that allowance to
those rules' reason codes, so a refusal for a rule the schema *could* state still fails the run.
And ``ensure_resource_availability`` is schemathesis' own, less one misreading (its docstring).
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.checks import CHECKS
from schemathesis.specs.openapi import checks as builtin
from schemathesis.specs.openapi.checks import is_unexpected_http_status_case

ALLOWED_STATUSES = frozenset({413, 415, 422})
# Refusals of an image's content (sizes, format, decoding, base64, the URL or path behind it).
IMAGE_CONTENT = frozenset(
    {
        "too_large",
        "too_many_pixels",
        "unsupported_format",
        "corrupt",
        "extreme_aspect_ratio",
        "empty",
        "invalid_base64",
        "invalid_url",
        "fetch_failed",
        "not_found",
    }
)
# Queries: vector length vs the model, date order, paging window, the collection's models.
QUERY = frozenset({"invalid_query", "unsupported_operation"})

INEXPRESSIBLE: dict[str, frozenset[str]] = {
    "POST /v1/vision/encode": IMAGE_CONTENT,
    "POST /v1/vision/similarity": IMAGE_CONTENT,
    "POST /v1/multimodal/encode": IMAGE_CONTENT | {"unsupported_operation"},  # a vision model
    "POST /v1/multimodal/match": IMAGE_CONTENT | {"unsupported_operation"},
    "POST /v1/collections/{name}/search": IMAGE_CONTENT | QUERY,
    "POST /v1/multimodal/search": IMAGE_CONTENT | QUERY,
    "POST /v1/collections/{name}/images": IMAGE_CONTENT,
    "POST /v1/collections/{name}/duplicates": QUERY,  # the collection's models, date order
    "POST /v1/collections": frozenset({"invalid_input"}),  # an index factory FAISS refuses
    # The collection's own models; what a model can embed (a vision-only text default).
    "PATCH /v1/collections/{name}": frozenset({"invalid_input", "unsupported_operation"}),
    "DELETE /v1/collections/{name}/models": frozenset({"invalid_input"}),
    "POST /v1/collections/{name}/models": frozenset({"invalid_input"}),  # its index factory
}


def _code(response: Any) -> str | None:
    try:
        code = response.json().get("code")
    except Exception:  # not a JSON error body
        return None
    return code if isinstance(code, str) else None


@schemathesis.check
def refused_only_for_inexpressible_rules(ctx: Any, response: Any, case: Any) -> bool | None:
    """A schema-valid request refused with 413/415/422 names a rule the schema cannot state."""
    meta = case.meta
    if (
        meta is None
        or not meta.generation.mode.is_positive
        or is_unexpected_http_status_case(case)
        or response.status_code not in ALLOWED_STATUSES
        or case.operation.label not in INEXPRESSIBLE
    ):
        return None
    code = _code(response)  # None (not a JSON error body) is a finding too
    allowed = INEXPRESSIBLE[case.operation.label]
    if code not in allowed:
        raise AssertionError(
            f"a schema-valid request was refused with {response.status_code} {code!r}; "
            f"the schema states every rule but those behind {sorted(allowed)}"
        )
    return None


CHECKS.unregister("ensure_resource_availability")  # replaced just below, under its own name


@schemathesis.check
def ensure_resource_availability(ctx: Any, response: Any, case: Any) -> bool | None:
    """Schemathesis' check of this name, less a misreading: after ``POST /v1/collections``, a
    search for an ``image_id`` the new collection lacks answers 404 ``image_not_found``, which
    the check takes for the collection itself gone missing."""
    if response.status_code == 404 and _code(response) == "image_not_found":
        return None
    result: bool | None = builtin.ensure_resource_availability(ctx, response, case)
    return result
