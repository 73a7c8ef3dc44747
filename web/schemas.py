"""Request/response bodies and parameter types shared by several areas.

Route modules import what they share from here, never from each other; a type used by one
area only stays in that area's module.

The OpenAPI schema of a JSON body is msgspec's own schema of its Struct (what msgspec validates),
plus what the server checks in code, written as JSON Schema so that a request the schema calls
valid is one the server takes: a Struct's ``schema_rules`` (exactly one of some fields, ...) and
``documented(...)`` on a field (its pattern or bounds, refused by the code that checks them, with
that code's status and reason). Patterns read the same in Python's ``re`` and in ECMA-262.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar

import msgspec
from litestar.datastructures import ResponseHeader
from litestar.params import Parameter

from vizdex.core.errors import InvalidInputError
from vizdex.search import (
    MAX_SIMILARITY_INPUTS,
    METADATA_KEY,
    ImageFilter,
    check_metadata_keys,
)

INT64_MAX = 2**63 - 1
# Per encode / similarity side / match request (the service's cap); bulk work: /v1/vision/batch.
MAX_IMAGES = MAX_SIMILARITY_INPUTS
MAX_METADATA_DEPTH = 8

Rules = tuple[dict[str, Any], ...]
JsonSchema = dict[str, Any]

# `$` also matches before a final newline in Python; this lookahead is the end in both dialects.
END = "(?![\\s\\S])"
# What `str.strip()` removes (every character `str.isspace()` calls white space).
SPACES = "".join(f"\\u{ord(c):04x}" for c in map(chr, range(0x3001)) if c.isspace())
NOT_BLANK = f"[^{SPACES}]"  # somewhere in the string: a character `strip()` keeps
COLLECTION_NAME = f"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,99}}{END}"  # as the catalog's, less its `$`
# What vizdex fetches: http(s), no spaces or control characters (vizdex.imaging.fetch).
HTTP_URL = f"^[Hh][Tt][Tt][Pp][Ss]?:[^\\x00-\\x20\\x7f]*{END}"


def documented(**rules: Any) -> msgspec.Meta:
    """JSON Schema ``rules`` for a field that the code behind it enforces (with its own status
    and reason code), not msgspec."""
    return msgspec.Meta(extra_json_schema=rules)


ImageId = Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX, description="an image id")]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
Int32 = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
MinSeq = Annotated[
    int,
    msgspec.Meta(
        ge=0, le=INT64_MAX, description="a write's `seq`: wait until this replica has applied it"
    ),
]
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
Text = Annotated[str, msgspec.Meta(max_length=10_000)]
QueryText = Annotated[
    Text, documented(minLength=1, pattern=NOT_BLANK, description="not only white space")
]
CollectionRef = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=100),
    documented(
        pattern=COLLECTION_NAME,
        description="letters, digits, '_', '-' or '.', starting with a letter or digit",
    ),
]


def _id_parameter(what: str) -> Any:
    # Litestar writes `ge`/`le` as floats (2**63 - 1 becomes 2**63): the schema says the ints.
    return Parameter(
        ge=1,
        le=INT64_MAX,
        description=what,
        schema_extra={"minimum": 1, "maximum": INT64_MAX},
    )


# Path parameters of several areas (``{name}``, ``{image_id}`` and ``{job_id}`` in the paths).
CollectionName = Annotated[
    str,
    Parameter(
        max_length=200,
        description="collection name",
        # A name no collection can have finds none (404).
        schema_extra={"min_length": 1, "max_length": 100, "pattern": COLLECTION_NAME},
    ),
]
ImageIdParam = Annotated[int, _id_parameter("image id")]
JobIdParam = Annotated[int, _id_parameter("job id")]


def exactly_one_of(*names: str) -> JsonSchema:
    """Exactly one of ``names`` is given and not null; the others are left out or null."""
    return {
        "oneOf": [
            {
                "required": [name],
                "properties": {
                    other: ({"not": {"type": "null"}} if other == name else {"type": "null"})
                    for other in names
                },
            }
            for name in names
        ]
    }


# The nesting limit is said in words only: as JSON Schema it takes a definition per level, and
# schema-driven tools then enumerate every path through them (minutes per operation).
METADATA_SCHEMA: JsonSchema = {
    "type": "object",
    "description": f"a JSON object, nested at most {MAX_METADATA_DEPTH} levels deep; its keys "
    "are the ones filters can name",
    "propertyNames": {"pattern": METADATA_KEY.pattern},
}
EMPTY_METADATA: JsonSchema = {"anyOf": [{"type": "null"}, {"type": "object", "maxProperties": 0}]}
# User metadata: what `check_metadata` takes, said in the schema.
Metadata = Annotated[dict[str, Any], msgspec.Meta(extra_json_schema=METADATA_SCHEMA)]


def check_metadata(value: dict[str, Any], what: str = "metadata") -> dict[str, Any]:
    """User metadata is a JSON object nested at most ``MAX_METADATA_DEPTH`` levels."""

    check_metadata_keys(value)  # the rule filters use: every key stored can be filtered on
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:  # iterative: a deep value must not exhaust the interpreter's stack
        node, level = stack.pop()
        if level > MAX_METADATA_DEPTH:
            raise InvalidInputError(f"{what} may nest at most {MAX_METADATA_DEPTH} levels deep")
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return value


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """Every error answer: the HTTP status, a stable reason ``code`` and a readable ``detail``."""

    status_code: int
    code: str
    detail: str
    details: dict[str, Any] | None = None  # facts about the error (e.g. the model name)
    errors: list[dict[str, Any]] | None = None  # validation problems, field by field


# An image as a string: base64, a data: URL or (where enabled) an http(s) URL or a path; the
# image door refuses an empty one (422 `empty`).
ImageString = Annotated[str, documented(minLength=1)]
ImageUrl = Annotated[
    str, documented(minLength=1, maxLength=8192, pattern=HTTP_URL, description="an http(s) URL")
]


class ImageInput(msgspec.Struct, forbid_unknown_fields=True):
    """One image: exactly one of base64 ``data`` (or a ``data:`` URL), ``url`` or ``path``.

    ``url`` and ``path`` work only where the server enables them (``VIZDEX_ALLOW_URLS``,
    ``VIZDEX_ALLOWED_ROOTS``).
    """

    schema_rules: ClassVar[Rules] = (exactly_one_of("data", "url", "path"),)

    data: ImageString | None = None
    url: ImageUrl | None = None
    path: ImageString | None = None

    def door_item(self) -> dict[str, str]:
        """The mapping ``encoders.images.load_image`` takes: only the keys that were given."""
        given = {"data": self.data, "url": self.url, "path": self.path}
        return {key: value for key, value in given.items() if value is not None}


# A bare string is base64, a data: URL or (where enabled) an http(s) URL.
ImageItem = ImageString | ImageInput


def door_item(item: ImageItem) -> str | dict[str, str]:
    return item if isinstance(item, str) else item.door_item()


class Tensor(msgspec.Struct):
    """Vectors as one little-endian float32 array, base64-encoded, row-major (``shape``)."""

    dtype: str
    shape: list[int]
    data: str


MetadataScalar = str | int | float | bool
# As the catalog's filter keys (search.records.METADATA_KEY), less its `$`.
FilterKey = Annotated[str, documented(pattern=f"^[A-Za-z0-9_][A-Za-z0-9_. -]{{0,63}}{END}")]
# msgspec's own schema of a datetime says only "string"; it parses RFC 3339 (no offset: UTC).
Timestamp = Annotated[
    datetime, msgspec.Meta(extra_json_schema={"format": "date-time"}, description="RFC 3339")
]


class SearchFilter(msgspec.Struct, forbid_unknown_fields=True):
    """Only images whose metadata has these exact values, created in ``[after, before)``."""

    metadata: dict[FilterKey, MetadataScalar] = msgspec.field(default_factory=dict)
    created_after: Timestamp | None = None
    created_before: Timestamp | None = None


def image_filter(given: SearchFilter | None) -> ImageFilter | None:
    """The catalog's filter for a request's ``filter`` (which checks keys and the date order)."""
    if given is None:
        return None
    return ImageFilter(
        metadata=dict(given.metadata),
        created_after=given.created_after,
        created_before=given.created_before,
    )


# Read-your-writes: the collection's sequence number after the write, for a search's `min_seq`.
SEQ_HEADER = "Vizdex-Seq"
SEQ_HEADERS = [
    ResponseHeader(
        name=SEQ_HEADER,
        documentation_only=True,
        value="0",
        description="the collection's sequence number once this write committed: pass it as "
        "a search's `min_seq` to read this write on any replica",
    )
]
