"""The image formats vizdex accepts: one registry for names, file extensions and media types.

Formats are recognised by their magic bytes (``sniff_format``) before Pillow sees anything, so
parsers for other formats are never reached; a refused format is named in the refusal when known.
"""

from __future__ import annotations

from dataclasses import dataclass

from vizdex.core.errors import ImageRejectedError


@dataclass(frozen=True)
class ImageFormat:
    """``name``: Pillow's format name, as the catalog stores it. ``extensions``: what a folder
    scan picks up, the first naming stored originals. ``label``: how messages write it."""

    name: str
    label: str
    extensions: tuple[str, ...]
    media_type: str


FORMATS: tuple[ImageFormat, ...] = (
    ImageFormat("JPEG", "JPEG", ("jpg", "jpeg", "jpe"), "image/jpeg"),
    ImageFormat("PNG", "PNG", ("png",), "image/png"),
    ImageFormat("WEBP", "WebP", ("webp",), "image/webp"),
    ImageFormat("GIF", "GIF", ("gif",), "image/gif"),
    ImageFormat("BMP", "BMP", ("bmp",), "image/bmp"),
    ImageFormat("TIFF", "TIFF", ("tif", "tiff"), "image/tiff"),
)
_BY_NAME = {f.name: f for f in FORMATS}
ACCEPTED_FORMATS: tuple[str, ...] = tuple(_BY_NAME)
SCAN_EXTENSIONS: tuple[str, ...] = tuple(ext for f in FORMATS for ext in f.extensions)
ACCEPTED_TEXT = ", ".join(f.label for f in FORMATS[:-1]) + f" or {FORMATS[-1].label}"


def file_extension(name: str) -> str:
    """The extension a stored original of format ``name`` gets (``bin`` if unknown)."""
    found = _BY_NAME.get(name.upper())
    return found.extensions[0] if found else "bin"


def media_type(name: str) -> str:
    """The ``Content-Type`` of an image of format ``name``."""
    found = _BY_NAME.get(name.upper())
    return found.media_type if found else "application/octet-stream"


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
        message = f"the data is not a {ACCEPTED_TEXT} image"
    else:
        message = f"{what} files are not accepted; send a {ACCEPTED_TEXT} image"
    raise ImageRejectedError(message, code="unsupported_format")


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
