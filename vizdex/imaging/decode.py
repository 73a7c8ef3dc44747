"""The one safe door for every image that enters vizdex.

Uploads, base64, ``data:`` URLs, allowed file paths, http(s) URLs and files found by a folder scan
all come through here and leave either as a decoded, EXIF-oriented RGB image or as one
``ImageRejectedError`` whose ``code`` says why. The order of checks is what keeps it safe:
byte cap → magic bytes (format allowlist) → header-only open with Pillow restricted to that format
→ pixel cap → decode → RGB. Nothing is decoded before it has passed every cheaper check.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageFile, UnidentifiedImageError

from vizdex.core.errors import ImageRejectedError
from vizdex.imaging import png, tiff
from vizdex.imaging.budget import DECODING
from vizdex.imaging.formats import sniff_format
from vizdex.imaging.inputs import checked_size, read_input
from vizdex.imaging.jpeg import check_data as check_jpeg_data
from vizdex.imaging.jpeg import check_structure, decode_jpeg, draft_scale
from vizdex.imaging.paths import read_regular_file
from vizdex.imaging.pixels import ORIENTATION_FIX, SWAPS_AXES, exif_orientation, to_rgb
from vizdex.imaging.settings import ImageInputSettings, format_megapixels

_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image and the facts the catalog keeps about it."""

    image: Image.Image  # mode "RGB", EXIF-oriented, possibly draft-reduced (see ``min_side``)
    width: int  # original size after EXIF orientation, whatever the draft reduction
    height: int
    format: str  # one of ACCEPTED_FORMATS
    byte_size: int
    sha256: str  # hex digest of the raw bytes


def load_image(
    item: str | bytes | Mapping[str, Any],
    settings: ImageInputSettings,
    *,
    min_side: int | None = None,
) -> DecodedImage:
    """``read_input`` then ``decode_image_bytes``: the whole door in one call."""
    return decode_image_bytes(read_input(item, settings), settings, min_side=min_side)


def decode_image_bytes(
    data: bytes,
    settings: ImageInputSettings,
    *,
    min_side: int | None = None,
    sha256: str | None = None,
) -> DecodedImage:
    """Decode ``data`` to RGB, or refuse it.

    ``min_side`` lets JPEG decode at a reduced DCT scale whose shortest side is still at least
    ``min_side`` (callers pass about twice their model input); other formats decode at full size.
    ``sha256``: the hex digest of ``data`` when the caller has already computed it (ingestion
    hashes before it decodes, to skip known content), so a 12 MP photo is not hashed twice.
    """
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be a positive number of pixels, got {min_side}")
    checked_size(data, settings)
    fmt = sniff_format(data)
    image, width, height = _decode(data, fmt, settings, min_side)
    return DecodedImage(
        image=image,
        width=width,
        height=height,
        format=fmt,
        byte_size=len(data),
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
    )


def decode_file(
    path: str | os.PathLike[str],
    settings: ImageInputSettings,
    *,
    min_side: int | None = None,
) -> DecodedImage:
    """Decode a file the operator chose (e.g. a folder scan): no root check, every other limit."""
    data = read_regular_file(os.fspath(path), settings, roots=None, shown=os.fspath(path))
    return decode_image_bytes(data, settings, min_side=min_side)


def _decode(
    data: bytes, fmt: str, settings: ImageInputSettings, min_side: int | None
) -> tuple[Image.Image, int, int]:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # A global someone flipped would make truncated files come out half grey: fail loudly.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False for vizdex")
    with _door_errors(fmt, settings), Image.open(io.BytesIO(data), formats=(fmt,)) as opened:
        width, height = opened.size  # from the header; no pixel is decoded yet
        _check_pixels(width, height, settings)
        scale = draft_scale(width, height, min_side) if fmt == "JPEG" else 1
        with DECODING.hold(width * height // scale**2, settings.decode_budget_pixels):
            if fmt == "JPEG":
                image = decode_jpeg(data, opened, min_side)  # strict: damage is refused
            else:
                # Pillow fills with black the rows a PNG or a JPEG-compressed TIFF lacks.
                if fmt == "TIFF":
                    tiff.check_complete(data, opened)
                opened.load()
                if fmt == "PNG":
                    png.check_complete(data, opened)
                image = to_rgb(opened)
        # Read after the pixels: a PNG's getexif() loads them itself, and exif_orientation
        # forgives any error (damaged metadata), so before load() it would swallow damaged data.
        orientation = exif_orientation(opened)
    if orientation in ORIENTATION_FIX:
        image = image.transpose(ORIENTATION_FIX[orientation])
    if orientation in SWAPS_AXES:
        width, height = height, width
    return image, width, height


def read_header(
    data: bytes, fmt: str, settings: ImageInputSettings, *, check_data: bool = False
) -> tuple[int, int, int]:
    """(width, height, EXIF orientation) from the header alone, the size as displayed.

    Same pixel cap and refusals as a decode, for callers that decode the pixels elsewhere
    (e.g. on a GPU). A JPEG's structure is checked from its markers; ``check_data`` also reads
    all its data strictly (``jpeg.check_data``, about half a decode's work), so that it is
    refused exactly when a decode here would refuse it, whatever the other decoder does.
    """
    with _door_errors(fmt, settings), Image.open(io.BytesIO(data), formats=(fmt,)) as opened:
        width, height = opened.size
        _check_pixels(width, height, settings)
        orientation = exif_orientation(opened)
    if fmt == "JPEG":
        # The pixels are decoded elsewhere, perhaps without such checks.
        with _door_errors(fmt, settings):
            (check_jpeg_data if check_data else check_structure)(data)
    if orientation in SWAPS_AXES:
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


def _check_pixels(width: int, height: int, settings: ImageInputSettings) -> None:
    pixels = width * height
    if pixels > settings.max_pixels:
        raise ImageRejectedError(
            f"image is {width:,}×{height:,} = {format_megapixels(pixels)}; "
            f"the limit is {format_megapixels(settings.max_pixels)}",
            code="too_many_pixels",
        )
    # Checked from the header, like the pixel cap: no intermediate of the resize is ever made.
    if max(width, height) > settings.max_aspect_ratio * max(1, min(width, height)):
        raise ImageRejectedError(
            f"image is {width:,}×{height:,}: one side is more than "
            f"{settings.max_aspect_ratio:g} times the other, too elongated to scale to a "
            "model's input",
            code="extreme_aspect_ratio",
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
