"""PNG pixels that are whole, or a refusal: never rows the file does not hold, filled with black.

Pillow's PNG decoder stops without complaint when the compressed data ends (a complete zlib
stream) before the last row its header promises, and leaves the missing rows zero (black): a
102-byte file whose header says 7000×7000 decodes to 147 MB of black. ``check_complete`` looks
at the last row the decoder writes (rows come in order, so a written last row means every row
was written); only when that row is all zero, as missing rows are (or a black last row is), does
it inflate the image data again, in bounded pieces, and refuse the file when it holds fewer bytes
than the header's rows need. Damage that zlib itself notices is left to the decoder.
"""

from __future__ import annotations

import zlib

import numpy as np
from PIL import Image

from vizdex.core.errors import ImageRejectedError

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
# Adam7 passes: (first column, first row, column step, row step)
_ADAM7 = (
    (0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
    (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2),
)  # fmt: skip
_PIECE = 1 << 20  # inflate at most this much at a time: memory stays flat whatever the size
_FEED = 1 << 16  # and feed it this much: zlib copies the input it has not used on every call


def check_complete(data: bytes, image: Image.Image) -> None:
    """Refuse (``corrupt``) a PNG whose image data holds less than its header's rows need.

    ``image``: ``data`` as Pillow decoded it (``load()`` done, before any mode conversion).
    """
    header = _header(data)
    if header is None:
        return  # not a header this check understands: the decoder has the final word
    width, height, bits_per_pixel, interlaced = header
    if image.size != (width, height) or _last_row_written(image, interlaced):
        return
    needed = _needed_bytes(width, height, bits_per_pixel, interlaced)
    inflater = zlib.decompressobj()
    got = 0
    try:
        for chunk in _image_data(data):
            for start in range(0, len(chunk), _FEED):
                pending: bytes | memoryview = chunk[start : start + _FEED]
                while pending and got < needed:
                    got += len(inflater.decompress(pending, _PIECE))
                    pending = inflater.unconsumed_tail
                if got >= needed:
                    return
    except zlib.error:
        return  # damaged compressed data: the decoder refuses it with its own reason
    raise ImageRejectedError(
        f"the PNG image is incomplete: its {width:,}×{height:,} pixels need more data than "
        "the file holds",
        code="corrupt",
    )


def _last_row_written(image: Image.Image, interlaced: bool) -> bool:
    """Whether the pixels the decoder writes last hold anything but zeros.

    Without interlacing that is the last row. With Adam7 it is the last row of the last pass
    that has pixels (pass 7 writes every odd row whole; in a one-row image, pass 6 or earlier
    writes some of its columns), and a pass is only written once those before it are whole.
    """
    width, height = image.size
    row, first, step = height - 1, 0, 1
    if interlaced:
        for x0, y0, dx, dy in reversed(_ADAM7):
            if width > x0 and height > y0:
                row, first, step = y0 + dy * ((height - 1 - y0) // dy), x0, dx
                break
    pixels = np.asarray(image.crop((0, row, width, row + 1)))[0]
    return bool(pixels[first::step].any())


def _header(data: bytes) -> tuple[int, int, int, bool] | None:
    """(width, height, bits per pixel, interlaced) from IHDR, or None if it is not readable."""
    if not data.startswith(_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 29:
        return None
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    depth, colour, interlace = data[24], data[25], data[28]
    if colour not in _CHANNELS or depth not in (1, 2, 4, 8, 16) or interlace not in (0, 1):
        return None
    return width, height, _CHANNELS[colour] * depth, interlace == 1


def _needed_bytes(width: int, height: int, bits_per_pixel: int, interlaced: bool) -> int:
    """Inflated size of the image data: each row is a filter byte and its packed samples."""

    def rows(columns: int, count: int) -> int:
        return count * (1 + (columns * bits_per_pixel + 7) // 8) if columns and count else 0

    if not interlaced:
        return rows(width, height)
    return sum(
        rows(max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy)))
        for x0, y0, dx, dy in _ADAM7
    )


def _image_data(data: bytes) -> list[memoryview]:
    """The IDAT payloads in file order (without copies), up to IEND or the end of the data."""
    view = memoryview(data)
    found: list[memoryview] = []
    at = len(_SIGNATURE)
    while at + 8 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        kind = data[at + 4 : at + 8]
        if kind == b"IEND":
            break
        if kind == b"IDAT":
            found.append(view[at + 8 : at + 8 + length])
        at += 12 + length
    return found
