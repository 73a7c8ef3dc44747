"""Request bodies we read ourselves: one route taking JSON or multipart, each with its own cap.

Litestar enforces the route's byte limit while streaming (the larger, upload limit on these
routes); JSON bodies are held to the JSON limit here, from ``Content-Length`` when sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import msgspec
from litestar import Request
from litestar.datastructures import UploadFile
from litestar.exceptions import HTTPException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE

from vizdex.imaging.settings import format_bytes
from vizdex.web.schemas import END, SPACES

T = TypeVar("T")
BodyKind = Literal["json", "multipart"]

# A form's true/false field: these words in any case, white space around them ignored (as
# `Form.flag` reads it: no other letter lower-cases to one of theirs); empty means the default.
FLAG_WORDS = ("true", "1", "yes", "on", "false", "0", "no", "off")
_ANY_CASE = "|".join(
    "".join(f"[{c.upper()}{c}]" if c.isalpha() else c for c in word) for word in FLAG_WORDS
)
FORM_FLAG = {
    "type": "string",
    "pattern": f"^(?:[{SPACES}]*(?:{_ANY_CASE})[{SPACES}]*)?{END}",
    "description": "true or false (also 1/0, yes/no, on/off); empty: the default",
}


def body_kind(request: Request[Any, Any, Any]) -> BodyKind:
    media_type = request.content_type[0]
    if media_type == "multipart/form-data":
        return "multipart"
    if media_type in ("", "application/json") or media_type.endswith("+json"):
        return "json"
    raise HTTPException(
        status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        detail=f"send application/json or multipart/form-data, not {media_type}",
    )


def _too_large(limit: int) -> RequestEntityTooLarge:
    return RequestEntityTooLarge(f"the JSON body is larger than the limit of {format_bytes(limit)}")


async def read_json(request: Request[Any, Any, Any], kind: type[T], limit: int) -> T:
    announced = request.headers.get("content-length")
    if announced and announced.isdigit() and int(announced) > limit:
        raise _too_large(limit)
    body = await request.body()
    if len(body) > limit:
        raise _too_large(limit)
    return decode_json(body, kind)


def decode_json(body: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as error:
        raise ValidationException(f"invalid request body: {error}") from None
    except msgspec.DecodeError as error:
        raise ValidationException(f"the body is not valid JSON: {error}") from None
    except RecursionError:
        raise ValidationException("the JSON nests too deeply") from None
    except UnicodeDecodeError:
        raise ValidationException("the body is not valid UTF-8") from None


@dataclass
class Form:
    """A multipart form: file parts in order, and the last value of each text field."""

    files: list[UploadFile] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)

    def flag(self, name: str, default: bool) -> bool:
        value = self.fields.get(name)
        if value is None or value == "":
            return default
        lowered = value.strip().lower()
        if lowered in FLAG_WORDS[:4]:
            return True
        if lowered in FLAG_WORDS[4:]:
            return False
        raise ValidationException(f"form field {name!r} must be true or false, got {value!r}")

    def text(self, name: str) -> str | None:
        value = self.fields.get(name)
        return value if value else None

    def json(self, name: str, kind: type[T]) -> T | None:
        value = self.fields.get(name)
        return None if not value else decode_json(value.encode(), kind)


async def read_form(request: Request[Any, Any, Any], max_files: int) -> Form:
    form = Form()
    for name, value in (await request.form()).multi_items():
        if isinstance(value, UploadFile):
            form.files.append(value)
        elif isinstance(value, str):
            form.fields[name] = value
    if len(form.files) > max_files:
        raise ValidationException(f"at most {max_files} files per request, got {len(form.files)}")
    return form
