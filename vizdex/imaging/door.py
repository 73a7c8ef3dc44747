"""The one safe door for every image that enters vizdex.

Uploads, base64, ``data:`` URLs, allowed file paths, http(s) URLs and files found by a folder scan
all come through here and leave either as a decoded, EXIF-oriented RGB image or as one
``ImageRejectedError`` whose ``code`` says why. The order of checks is what keeps it safe:
byte cap → magic bytes (format allowlist) → header-only open with Pillow restricted to that format
→ pixel cap → decode → RGB. Nothing is decoded before it has passed every cheaper check.

Paths: the string is percent-decoded exactly once (``%252e`` becomes the literal name ``%2e``,
never ``.``), then resolved with ``realpath`` and must sit inside an allowed root by
``commonpath`` (so ``/data2`` is not inside ``/data`` and symlinks out of a root are refused).
"""

from __future__ import annotations

import binascii
import errno
import hashlib
import io
import os
import pathlib
import re
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from vizdex.core.errors import ImageRejectedError
from vizdex.imaging.fetch import fetch_url
from vizdex.imaging.settings import ImageInputSettings, format_bytes, format_megapixels

__all__ = [
    "ACCEPTED_FORMATS",
    "DecodedImage",
    "ImageInputSettings",
    "decode_file",
    "decode_image_bytes",
    "load_image",
    "read_input",
    "resolve_allowed_path",
    "sniff_format",
    "to_rgb",
]

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_ACCEPTED_TEXT = "JPEG, PNG, WebP, GIF, BMP or TIFF"

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)
# Only to name what was sent in the refusal; anything not accepted above is refused anyway.
_OTHER_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%!PS", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x02\x00", "CUR"),
    (b"8BPS", "Photoshop (PSD)"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"qoif", "QOI"),
    (b"icns", "ICNS"),
    (b"DDS ", "DDS"),
    (b"PK\x03\x04", "ZIP"),
    (b"\x1f\x8b", "gzip"),
)
_ISOBMFF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"avif": "AVIF"}

_ORIENTATION_FIX = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31}):")
_ASCII_WHITESPACE = " \t\n\r\v\f"
_DELETE_WHITESPACE = str.maketrans("", "", _ASCII_WHITESPACE)
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image and the facts the catalog keeps about it."""

    image: Image.Image  # mode "RGB", EXIF-oriented, possibly draft-reduced (see ``min_side``)
    width: int  # original size after EXIF orientation, whatever the draft reduction
    height: int
    format: str  # one of ACCEPTED_FORMATS
    byte_size: int
    sha256: str  # hex digest of the raw bytes


# --- Public entry points ----------------------------------------------------------------------


def load_image(
    item: str | bytes | Mapping[str, Any],
    settings: ImageInputSettings,
    *,
    min_side: int | None = None,
) -> DecodedImage:
    """``read_input`` then ``decode_image_bytes``: the whole door in one call."""
    return decode_image_bytes(read_input(item, settings), settings, min_side=min_side)


def read_input(item: str | bytes | Mapping[str, Any], settings: ImageInputSettings) -> bytes:
    """The raw bytes of an image input, within the byte cap; nothing is decoded yet.

    ``bytes`` are raw image data; a ``str`` is a ``data:`` URL, an http(s) URL or base64; a mapping
    holds exactly one of ``data`` (base64, a ``data:`` URL, or raw bytes), ``url`` or ``path``.
    """
    if isinstance(item, bytes):
        return _checked_size(item, settings)
    if isinstance(item, str):
        return _read_string(item, settings)
    if isinstance(item, Mapping):
        return _read_mapping(item, settings)
    raise _invalid(f"an image must be bytes, a string or a mapping, not {type(item).__name__}")


def decode_image_bytes(
    data: bytes, settings: ImageInputSettings, *, min_side: int | None = None
) -> DecodedImage:
    """Decode ``data`` to RGB, or refuse it.

    ``min_side`` lets JPEG decode at a reduced DCT scale whose shortest side is still at least
    ``min_side`` (callers pass about twice their model input); other formats decode at full size.
    """
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be a positive number of pixels, got {min_side}")
    _checked_size(data, settings)
    fmt = sniff_format(data)
    image, width, height = _decode(data, fmt, settings, min_side)
    return DecodedImage(
        image=image,
        width=width,
        height=height,
        format=fmt,
        byte_size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def decode_file(
    path: str | os.PathLike[str],
    settings: ImageInputSettings,
    *,
    min_side: int | None = None,
) -> DecodedImage:
    """Decode a file the operator chose (e.g. a folder scan): no root check, every other limit."""
    data = _read_regular_file(os.fspath(path), settings, roots=None, shown=os.fspath(path))
    return decode_image_bytes(data, settings, min_side=min_side)


def resolve_allowed_path(path: str, settings: ImageInputSettings) -> pathlib.Path:
    """The real path of an existing file inside an allowed root, for a path a client sent.

    Relative paths are looked up under each root in order. Refuses with ``forbidden_path`` (no
    roots configured, NUL bytes, outside every root after ``realpath``) or ``not_found``.
    """
    if not settings.allowed_roots:
        raise _forbidden_path("reading image files from this server's disk is not enabled")
    decoded = _percent_decode_once(path)
    roots = _real_roots(settings)
    candidates = [decoded] if os.path.isabs(decoded) else [os.path.join(r, decoded) for r in roots]
    inside = False
    for candidate in candidates:
        real = os.path.realpath(candidate)
        if not _within_any(real, roots):
            continue
        inside = True
        if os.path.isfile(real):
            return pathlib.Path(real)
    if inside:
        raise ImageRejectedError(f"there is no image file at {path!r}", code="not_found")
    raise _forbidden_path(f"{path!r} is outside the folders this server may read images from")


def sniff_format(data: bytes) -> str:
    """The accepted format named by the magic bytes, or ``unsupported_format``.

    This runs before Pillow sees anything, so parsers for other formats are never reached.
    """
    for magic, fmt in _SIGNATURES:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    what = _name_unsupported(data[:512])
    if what is None:
        message = f"the data is not a {_ACCEPTED_TEXT} image"
    else:
        message = f"{what} files are not accepted; send a {_ACCEPTED_TEXT} image"
    raise ImageRejectedError(message, code="unsupported_format")


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB: transparency composited on white, 16-bit/32-bit/float scaled.

    An RGB image without a transparency key is returned as is (no copy).
    """
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:  # PNG may carry an RGB colour key
        return image
    if mode in _HIGH_DEPTH_MODES:
        # A transparency key on these modes is ignored: there is no 8-bit alpha to apply it to.
        return _high_depth_to_l(image).convert("RGB")
    if image.has_transparency_data:
        return _on_white(image)
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise ImageRejectedError(
            f"images in the {mode} colour mode are not supported", code="unsupported_format"
        ) from exc


# --- Decoding ---------------------------------------------------------------------------------


def _decode(
    data: bytes, fmt: str, settings: ImageInputSettings, min_side: int | None
) -> tuple[Image.Image, int, int]:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # A global someone flipped would make truncated files come out half grey: fail loudly.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False for vizdex")
    with _door_errors(fmt, settings), Image.open(io.BytesIO(data), formats=(fmt,)) as opened:
        width, height = opened.size  # from the header; no pixel is decoded yet
        _check_pixels(width, height, settings)
        if min_side is not None and fmt == "JPEG":
            opened.draft("RGB", (min_side, min_side))  # keeps both sides >= min_side
        opened.load()
        orientation = exif_orientation(opened)
        image = to_rgb(opened)
    if orientation in _ORIENTATION_FIX:
        image = image.transpose(_ORIENTATION_FIX[orientation])
    if orientation in _SWAPS_AXES:
        width, height = height, width
    return image, width, height


def read_header(data: bytes, fmt: str, settings: ImageInputSettings) -> tuple[int, int, int]:
    """(width, height, EXIF orientation) from the header alone, the size as displayed.

    Same pixel cap and refusals as a decode, for callers that decode the pixels elsewhere
    (e.g. on a GPU).
    """
    with _door_errors(fmt, settings), Image.open(io.BytesIO(data), formats=(fmt,)) as opened:
        width, height = opened.size
        _check_pixels(width, height, settings)
        orientation = exif_orientation(opened)
    if orientation in _SWAPS_AXES:
        width, height = height, width
    return width, height, orientation


@contextmanager
def _door_errors(fmt: str, settings: ImageInputSettings) -> Iterator[None]:
    """Pillow's many failure types as the door's typed refusals."""
    try:
        yield
    except ImageRejectedError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_many_pixels_from_pillow(exc, settings) from exc
    except MemoryError:
        raise
    except Exception as exc:  # Pillow signals damage with many exception types
        raise ImageRejectedError(
            f"the {fmt} image is damaged or incomplete and cannot be decoded{_detail(exc)}",
            code="corrupt",
        ) from exc


def _detail(exc: Exception) -> str:
    """Pillow's reason when it reads well ("image file is truncated"), not object reprs."""
    text = str(exc).strip()
    if not text or isinstance(exc, UnidentifiedImageError) or "<" in text or len(text) > 200:
        return ""
    return f" ({text})"


def exif_orientation(image: Image.Image) -> int:
    """EXIF orientation (1–8) like ``ImageOps.exif_transpose`` reads it; 1 if absent or unreadable.

    Broken EXIF is damaged metadata, not a damaged image, so it never rejects the image.
    """
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and value in _ORIENTATION_FIX else 1


def _check_pixels(width: int, height: int, settings: ImageInputSettings) -> None:
    pixels = width * height
    if pixels > settings.max_pixels:
        raise ImageRejectedError(
            f"image is {width:,}×{height:,} = {format_megapixels(pixels)}; "
            f"the limit is {format_megapixels(settings.max_pixels)}",
            code="too_many_pixels",
        )


def _too_many_pixels_from_pillow(
    exc: Exception, settings: ImageInputSettings
) -> ImageRejectedError:
    """Pillow's own bomb check fired inside ``Image.open``, before we saw the size."""
    found = _BOMB_PIXELS.search(str(exc))
    size = f"has {format_megapixels(int(found.group(1)))}" if found else "has too many pixels"
    return ImageRejectedError(
        f"image {size}; the limit is {format_megapixels(settings.max_pixels)}",
        code="too_many_pixels",
    )


def _on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba)  # the alpha band is the mask: src·α + white·(1−α)
    return canvas


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit integer and float grey to 8 bits instead of clipping at 255."""
    values = np.asarray(image)
    if image.mode == "F":
        return Image.fromarray(_float_to_u8(values))
    if image.mode == "I":
        return Image.fromarray(_int32_to_u8(values))
    return Image.fromarray(_u16_to_u8(values))


def _u16_to_u8(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    # round(v / 257) maps 0..65535 exactly onto 0..255 (65535 = 255 · 257).
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _int32_to_u8(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """32-bit grey has no declared range: 8-bit and 16-bit ranges are kept, others stretched."""
    low, high = int(values.min()), int(values.max())
    if low >= 0 and high <= 255:
        return values.astype(np.uint8)
    if low >= 0 and high <= 65535:
        return _u16_to_u8(values)
    return _stretch(values.astype(np.float32), float(low), float(high))


def _float_to_u8(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Float grey in 0..1 is scaled by 255; any other range is stretched to 0..255."""
    finite = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(finite.min()), float(finite.max())
    if low >= 0.0 and high <= 1.0:
        scaled: npt.NDArray[np.float32] = np.rint(finite * np.float32(255.0))
        return scaled.astype(np.uint8)
    return _stretch(finite, low, high)


def _stretch(values: npt.NDArray[np.float32], low: float, high: float) -> npt.NDArray[np.uint8]:
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled: npt.NDArray[np.float32] = np.rint((values - low) * np.float32(255.0 / (high - low)))
    return scaled.astype(np.uint8)


def _name_unsupported(head: bytes) -> str | None:
    for magic, name in _OTHER_SIGNATURES:
        if head.startswith(magic):
            return name
    if head[4:8] == b"ftyp" and head[8:12] in _ISOBMFF_BRANDS:
        return _ISOBMFF_BRANDS[head[8:12]]
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "SVG"
    if text.startswith((b"<!doctype html", b"<html")):
        return "HTML"
    if text.startswith(b"<?xml"):
        return "XML"
    return None


# --- Input parsing ----------------------------------------------------------------------------


def _invalid(message: str) -> ImageRejectedError:
    return ImageRejectedError(message, code="invalid_input")


def _forbidden_path(message: str) -> ImageRejectedError:
    return ImageRejectedError(message, code="forbidden_path")


def _checked_size(data: bytes, settings: ImageInputSettings) -> bytes:
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
        return _checked_size(fetch_url(text, settings), settings)
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
        return _checked_size(value, settings)
    if not isinstance(value, str):
        raise _invalid(f"'{key}' must be a string, not {type(value).__name__}")
    if key == "path":
        return _read_allowed_file(value, settings)
    text = value.strip()
    if text[:5].lower() == "data:":
        return _decode_data_url(text, settings)
    if key == "url":
        return _checked_size(fetch_url(text, settings), settings)
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
    return _checked_size(data, settings)


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


# --- Files ------------------------------------------------------------------------------------


def _percent_decode_once(path: str) -> str:
    """One round of percent-decoding only: ``%2e%2e`` is ``..``; ``%252e`` is the name ``%2e``."""
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        raise _forbidden_path(f"{path!r} is not valid UTF-8 once percent-decoded") from None
    if "\x00" in decoded:
        raise _forbidden_path("the path contains a NUL byte")
    if not decoded.strip():
        raise _forbidden_path("the path is empty")
    return decoded


def _real_roots(settings: ImageInputSettings) -> list[str]:
    return [os.path.realpath(root) for root in settings.allowed_roots]


def _within_any(real: str, roots: list[str]) -> bool:
    return any(os.path.commonpath([real, root]) == root for root in roots)


def _read_allowed_file(path: str, settings: ImageInputSettings) -> bytes:
    resolved = resolve_allowed_path(path, settings)
    return _read_regular_file(str(resolved), settings, roots=_real_roots(settings), shown=path)


def _read_regular_file(
    path: str, settings: ImageInputSettings, *, roots: list[str] | None, shown: str
) -> bytes:
    """Read a whole regular file within the byte cap, checking its size before reading.

    With ``roots``, the final component may not be a symlink and the file actually opened must
    still be inside a root: a swap between ``resolve_allowed_path`` and ``open`` is caught.
    """
    fd = _open_file(path, roots is not None, shown)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageRejectedError(f"{shown!r} is not a regular file", code="not_found")
        if roots is not None and not _opened_within(fd, roots):
            raise _forbidden_path(f"{shown!r} is outside the folders this server may read")
        _check_file_size(info.st_size, settings, shown)
        return _read_exactly(fd, info.st_size, shown)
    finally:
        os.close(fd)


def _read_exactly(fd: int, size: int, shown: str) -> bytes:
    """``size`` bytes and then end of file; usually one ``read`` and no copy."""
    chunks = []
    remaining = size
    while remaining > 0 and (chunk := os.read(fd, remaining)):
        chunks.append(chunk)
        remaining -= len(chunk)
    if remaining or os.read(fd, 1):
        raise ImageRejectedError(f"{shown!r} changed while it was being read", code="corrupt")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _open_file(path: str, no_follow: bool, shown: str) -> int:
    # O_NONBLOCK: opening a FIFO must not hang; regular files ignore it.
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if no_follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        raise ImageRejectedError(f"there is no image file at {shown!r}", code="not_found") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _forbidden_path(f"{shown!r} became a symbolic link while being opened") from None
        reason = exc.strerror or type(exc).__name__
        raise ImageRejectedError(f"{shown!r} cannot be read ({reason})", code="not_found") from None


def _opened_within(fd: int, roots: list[str]) -> bool:
    try:
        actual = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return True  # no /proc: realpath + O_NOFOLLOW is the check we have
    return actual.startswith("/") and _within_any(actual, roots)


def _check_file_size(size: int, settings: ImageInputSettings, shown: str) -> None:
    if size == 0:
        raise ImageRejectedError(f"{shown!r} is empty (0 bytes)", code="empty")
    if size > settings.max_bytes:
        raise ImageRejectedError(
            f"{shown!r} is {format_bytes(size)}; the limit is {format_bytes(settings.max_bytes)}",
            code="too_large",
        )
