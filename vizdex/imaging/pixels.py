"""Decoded pixels to what the models read: EXIF orientation, 8-bit RGB on white."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image

from vizdex.core.errors import ImageRejectedError

ORIENTATION_FIX = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SWAPS_AXES = frozenset({5, 6, 7, 8})
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


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


def exif_orientation(image: Image.Image) -> int:
    """EXIF orientation (1–8) like ``ImageOps.exif_transpose`` reads it; 1 if absent or unreadable.

    Broken EXIF is damaged metadata, not a damaged image, so it never rejects the image.
    """
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and value in ORIENTATION_FIX else 1


def _on_white(image: Image.Image) -> Image.Image:
    # convert() copies even an RGBA image: 4 bytes a pixel more at the peak for nothing.
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba)  # the alpha band is the mask: src·α + white·(1−α)
    return canvas


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit integer and float grey to 8 bits instead of clipping at 255.

    Worked in place on one copy of the pixels: at the pixel cap each extra temporary of these
    modes costs 200 MB, and the naive expressions made three or four of them.
    """
    if image.mode == "F":
        return Image.fromarray(_float_to_u8(np.array(image, dtype=np.float32)))
    values = np.asarray(image)
    if image.mode == "I":
        return Image.fromarray(_int32_to_u8(values))
    return Image.fromarray(_u16_to_u8(values))


def _u16_to_u8(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    # round(v / 257) maps 0..65535 exactly onto 0..255 (65535 = 255 · 257).
    wide = values.astype(np.uint32)
    wide += 128
    wide //= 257
    return wide.astype(np.uint8)


def _int32_to_u8(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """32-bit grey has no declared range: 8-bit and 16-bit ranges are kept, others stretched."""
    low, high = int(values.min()), int(values.max())
    if low >= 0 and high <= 255:
        return values.astype(np.uint8)
    if low >= 0 and high <= 65535:
        return _u16_to_u8(values)
    return _stretch(values.astype(np.float32), float(low), float(high))


def _float_to_u8(values: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """Float grey in 0..1 is scaled by 255; any other range is stretched to 0..255.

    ``values`` is the caller's own copy, changed in place."""
    finite = np.nan_to_num(values, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(finite.min()), float(finite.max())
    if low >= 0.0 and high <= 1.0:
        finite *= np.float32(255.0)
        return np.rint(finite, out=finite).astype(np.uint8)
    return _stretch(finite, low, high)


def _stretch(values: npt.NDArray[np.float32], low: float, high: float) -> npt.NDArray[np.uint8]:
    """``values`` (a float32 copy of the caller's, changed in place) stretched to 0..255."""
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    values -= np.float32(low)
    values *= np.float32(255.0 / (high - low))
    return np.rint(values, out=values).astype(np.uint8)
