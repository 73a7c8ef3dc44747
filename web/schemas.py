"""Request/response bodies and parameter types shared by several areas.

Route modules import what they share from here, never from each other; a type used by one
area only stays in that area's module.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar.params import Parameter

from vizdex.core.errors import InvalidInputError

INT64_MAX = 2**63 - 1
MAX_IMAGES = 256  # per encode / similarity / match request; bulk work goes to /v1/vision/batch
ImageId = Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX, description="an image id")]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
Text = Annotated[str, msgspec.Meta(max_length=10_000)]

# Path parameters of several areas (``{name}`` and ``{image_id}`` in the routes' paths).
CollectionName = Annotated[str, Parameter(max_length=200, description="collection name")]
ImageIdParam = Annotated[int, Parameter(ge=1, le=INT64_MAX, description="image id")]


MAX_METADATA_DEPTH = 8


def check_metadata(value: dict[str, Any], what: str = "metadata") -> dict[str, Any]:
    """User metadata is a JSON object nested at most ``MAX_METADATA_DEPTH`` levels."""

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


class ImageInput(msgspec.Struct, forbid_unknown_fields=True):
    """One image: exactly one of base64 ``data`` (or a ``data:`` URL), ``url`` or ``path``.

    ``url`` and ``path`` work only where the server enables them (``VIZDEX_ALLOW_URLS``,
    ``VIZDEX_ALLOWED_ROOTS``).
    """

    data: str | None = None
    url: str | None = None
    path: str | None = None

    def door_item(self) -> dict[str, str]:
        """The mapping ``encoders.images.load_image`` takes: only the keys that were given."""
        given = {"data": self.data, "url": self.url, "path": self.path}
        return {key: value for key, value in given.items() if value is not None}


# A bare string is base64, a data: URL or (where enabled) an http(s) URL.
ImageItem = str | ImageInput


def door_item(item: ImageItem) -> str | dict[str, str]:
    return item if isinstance(item, str) else item.door_item()


class Tensor(msgspec.Struct):
    """Vectors as one little-endian float32 array, base64-encoded, row-major (``shape``)."""

    dtype: str
    shape: list[int]
    data: str
