"""Image inputs to raw bytes under the byte cap: raw bytes, base64, ``data:`` URLs, URLs, paths.

Nothing is decoded here; sizes are checked before any copy is made.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from vizdex.core.errors import ImageRejectedError
from vizdex.imaging.fetch import fetch_url
from vizdex.imaging.paths import read_allowed_file
from vizdex.imaging.settings import ImageInputSettings, format_bytes

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31}):")
_ASCII_WHITESPACE = " \t\n\r\v\f"
_DELETE_WHITESPACE = str.maketrans("", "", _ASCII_WHITESPACE)
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


def read_input(item: str | bytes | Mapping[str, Any], settings: ImageInputSettings) -> bytes:
    """The raw bytes of an image input, within the byte cap; nothing is decoded yet.

    ``bytes`` are raw image data; a ``str`` is a ``data:`` URL, an http(s) URL or base64; a mapping
    holds exactly one of ``data`` (base64, a ``data:`` URL, or raw bytes), ``url`` or ``path``.
    """
    if isinstance(item, bytes):
        return checked_size(item, settings)
    if isinstance(item, str):
        return _read_string(item, settings)
    if isinstance(item, Mapping):
        return _read_mapping(item, settings)
    raise _invalid(f"an image must be bytes, a string or a mapping, not {type(item).__name__}")


def _invalid(message: str) -> ImageRejectedError:
    return ImageRejectedError(message, code="invalid_input")


def checked_size(data: bytes, settings: ImageInputSettings) -> bytes:
    if not data:
        raise ImageRejectedError("the image is empty (0 bytes)", code="empty")
    if len(data) > settings.max_bytes:
        raise ImageRejectedError(
            f"the image is {format_bytes(len(data))}; "
            f"the limit is {format_bytes(settings.max_bytes)}",
            code="too_large",
        )
    return data


def _read_string(item: str, settings: ImageInputSettings) -> bytes:
    text = item.strip()
    if not text:
        raise ImageRejectedError("the image is empty (an empty string)", code="empty")
    scheme = _SCHEME.match(text)  # base64 never contains ":", so this cannot misfire
    if scheme is None:
        return _decode_base64(text, settings)
    name = scheme.group(1).lower()
    if name == "data":
        return _decode_data_url(text, settings)
    if name in ("http", "https"):
        return checked_size(fetch_url(text, settings), settings)
    raise ImageRejectedError(
        f"only http(s) and data: URLs are accepted, not {name}:", code="forbidden_url"
    )


def _read_mapping(item: Mapping[str, Any], settings: ImageInputSettings) -> bytes:
    given = [key for key in ("data", "url", "path") if key in item]
    if len(given) != 1:
        raise _invalid("give exactly one of 'data', 'url' or 'path' for an image")
    key = given[0]
    value = item[key]
    if key == "data" and isinstance(value, bytes):
        return checked_size(value, settings)
    if not isinstance(value, str):
        raise _invalid(f"'{key}' must be a string, not {type(value).__name__}")
    if key == "path":
        return read_allowed_file(value, settings)
    text = value.strip()
    if text[:5].lower() == "data:":
        return _decode_data_url(text, settings)
    if key == "url":
        return checked_size(fetch_url(text, settings), settings)
    return _decode_base64(text, settings)


def _decode_base64(text: str, settings: ImageInputSettings) -> bytes:
    """Base64 (standard or URL-safe, padding optional, whitespace ignored), capped BEFORE decoding.

    The common case (no whitespace, correct padding) makes no copy before ``a2b_base64``.
    """
    # Wrapped base64 is ~3% longer than tight base64; twice the tight length is surely too big.
    if len(text) > 2 * (settings.max_bytes * 4 // 3 + 4) + 1024:
        raise _base64_too_large(len(text) * 3 // 4, settings, approximate=True)
    if not text.isascii():
        raise ImageRejectedError(
            "the base64 data contains characters that are not base64", code="invalid_base64"
        )
    if any(space in text for space in _ASCII_WHITESPACE):  # `in` is far faster than a regex
        text = text.translate(_DELETE_WHITESPACE)
    body_length = len(text) - _trailing_padding(text)
    decoded_size = body_length * 3 // 4
    if decoded_size > settings.max_bytes:
        raise _base64_too_large(decoded_size, settings, approximate=False)
    if body_length == 0:
        raise ImageRejectedError("the base64 data is empty", code="empty")
    if body_length % 4 == 1:
        raise ImageRejectedError(
            "the base64 data is cut off (its length is impossible for base64)",
            code="invalid_base64",
        )
    padding = -body_length % 4
    if len(text) != body_length + padding:  # padding missing or excessive
        text = text[:body_length] + "=" * padding
    if "-" in text or "_" in text:
        text = text.translate(_URLSAFE_TO_STANDARD)
    try:
        data = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageRejectedError(
            f"the data is not valid base64 ({exc})", code="invalid_base64"
        ) from None
    return checked_size(data, settings)


def _trailing_padding(text: str) -> int:
    """How many "=" end ``text``, without copying it in the usual case of at most two."""
    count = 0
    while count < 3 and count < len(text) and text[-1 - count] == "=":
        count += 1
    return count if count < 3 else len(text) - len(text.rstrip("="))


def _base64_too_large(
    decoded_size: int, settings: ImageInputSettings, *, approximate: bool
) -> ImageRejectedError:
    about = "about " if approximate else ""
    return ImageRejectedError(
        f"the base64 data decodes to {about}{format_bytes(decoded_size)}; "
        f"the limit is {format_bytes(settings.max_bytes)}",
        code="too_large",
    )


def _decode_data_url(text: str, settings: ImageInputSettings) -> bytes:
    comma = text.find(",", 0, 1024)
    if comma < 0:
        raise ImageRejectedError("the data: URL has no ',' before its data", code="invalid_base64")
    params = [part.strip().lower() for part in text[5:comma].split(";")]
    media_type, flags = params[0], params[1:]
    if media_type and not media_type.startswith("image/"):
        raise ImageRejectedError(
            f"the data: URL holds {media_type}, not an image", code="unsupported_format"
        )
    if "base64" not in flags:
        raise ImageRejectedError(
            "only base64 data: URLs are accepted (data:image/png;base64,...)",
            code="invalid_base64",
        )
    payload = text[comma + 1 :]
    if "%" in payload:  # not in the base64 alphabet, so it can only be URL escaping
        payload = unquote(payload)
    return _decode_base64(payload, settings)
