"""TIFF pixels that are whole, or a refusal, for the one codec whose damage libtiff lets through.

A JPEG-compressed TIFF holds one JPEG stream per strip or tile. libtiff decodes a stream that
stops early (with an end marker) or whose frame is smaller than the strip, and fills the rest
with black, without an error Pillow could see. ``check_complete`` reads each stream of the first
page from the tags alone and refuses the file when one is damaged or short (``jpeg.check_segment``:
the same strict libjpeg-turbo decode as a JPEG file, at 1/8 scale). Other codecs (none, LZW,
Deflate, PackBits) are refused by libtiff itself when their data runs short.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from PIL import Image

from vizdex.imaging.jpeg import check_segment

_JPEG_COMPRESSION = 7  # "new-style" JPEG (TIFF Technical Note 2)
_SOI, _EOI = b"\xff\xd8", b"\xff\xd9"


def check_complete(data: bytes, opened: Image.Image) -> None:
    """Refuse (``corrupt``) a JPEG-compressed TIFF page with a damaged or short strip or tile."""
    tags: Any = getattr(opened, "tag_v2", None)
    if tags is None or tags.get(259) != _JPEG_COMPRESSION:
        return
    tables = tags.get(347)  # JPEGTables: quantisation and Huffman tables the streams leave out
    for offset, count, least in _segments(tags):
        segment = data[offset : offset + count]
        if isinstance(tables, bytes) and tables.endswith(_EOI) and segment.startswith(_SOI):
            segment = tables[:-2] + segment[2:]  # one whole JPEG: the tables, then the stream
        check_segment(segment, least)


def _segments(tags: Any) -> Iterator[tuple[int, int, tuple[int, int]]]:
    """(offset, byte count, least (width, height) its frame must have) of each strip or tile."""
    width, height = int(tags.get(256, 0)), int(tags.get(257, 0))
    if 324 in tags and 325 in tags:
        tile = (int(tags.get(322, 0)), int(tags.get(323, 0)))
        for offset, count in zip(tags[324], tags[325], strict=False):
            yield int(offset), int(count), tile
        return
    offsets, counts = tags.get(273, ()), tags.get(279, ())
    rows = int(tags.get(278, height)) or height
    per_plane = max(1, math.ceil(height / rows)) if rows else 1
    for index, (offset, count) in enumerate(zip(offsets, counts, strict=False)):
        first = (index % per_plane) * rows
        yield int(offset), int(count), (width, max(0, min(rows, height - first)))
