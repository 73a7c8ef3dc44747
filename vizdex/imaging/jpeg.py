"""JPEG pixels that are whole, or a refusal: never a damaged file filled in with grey.

Pillow (like libjpeg's default) decodes a JPEG whose data stops early but which still ends with
an end marker, and fills the rest with grey; so does a decoder on a GPU. Two checks close that:

* ``decode_jpeg``: libjpeg-turbo through simplejpeg in strict mode, so its "premature end of
  data segment" (and other damage) warnings are errors. Its pixels equal Pillow's (same library,
  same DCT and upsampling, same power-of-two draft scales); warnings that are not damage
  (extraneous bytes before a marker, odd metadata) decode as Pillow would.
* ``check_structure``: from the markers alone, without decoding: a sequential JPEG's scan must
  hold at least two bits per 8×8 block (a DC and an AC code), a scan with restart markers one
  marker per interval, and the scans must cover every component (and, progressive, every
  coefficient to its last bit). Both paths run it.
* ``check_data``: for callers that decode the pixels elsewhere (nvJPEG), whose handling of
  damage cannot be relied on: ``check_structure`` plus a strict decode at the smallest DCT scale,
  so both paths refuse the same files (a scan cut mid-way passes the markers alone).

Arithmetic-coded JPEGs are refused outright: their decoder reads a marker met inside the data as
"the rest is zeros", which the standard allows, so a file cut short decodes without a warning and
no check can tell it from a whole one (and most software cannot display them at all).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image

from vizdex.core.errors import ImageRejectedError
from vizdex.imaging.pixels import to_rgb

# libjpeg warnings that do not mean missing or damaged pixels (jerror.h's JWRN_* texts).
_HARMLESS = (
    "extraneous bytes before marker",
    "unknown JFIF revision",
    "Unknown Adobe color transform",
    "bad ICC marker",
)
_DIRECT = frozenset({"RGB", "L"})  # Pillow's modes libjpeg-turbo converts to RGB as Pillow does
_DRAFT_SCALES = (8, 4, 2, 1)  # Pillow's draft() picks among these only
_SOF_SEQUENTIAL = frozenset({0xC0, 0xC1})
_SOF_PROGRESSIVE = 0xC2
_SOF_OTHER = frozenset({0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_SOF_ARITHMETIC = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: markers without a length
# In a scan, 0xFF is stuffed as FF 00 and restart markers are FF D0-D7: anything else ends it.
# The match starts at the last 0xFF of any fill run. Written without ``\xff+``, which found the
# same place ~10x slower (60 ms over a 3 MB photo's scan: a quarter of a decode).
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_RESTART = re.compile(rb"\xff[\xd0-\xd7]")


def decode_jpeg(data: bytes, opened: Image.Image, min_side: int | None) -> Image.Image:
    """RGB pixels of ``data``, whose header ``opened`` (Pillow, not loaded yet) has read.

    ``min_side``: decode at the draft scale Pillow would pick for ``draft("RGB", (s, s))``.
    Raises ``ValueError`` (the door reports it as ``corrupt``) when the data is damaged.
    """
    check_structure(data)
    width, height = opened.size
    scale = draft_scale(width, height, min_side)
    wanted = (math.ceil(width / scale), math.ceil(height / scale))
    # Pillow's mode, not simplejpeg's header reader: that one refuses harmless warnings.
    if opened.mode in _DIRECT:
        pixels = _decode(data, "RGB", wanted)
        if pixels is not None and pixels.shape[1::-1] == wanted:
            return Image.fromarray(pixels)
    else:
        # CMYK and YCCK: Pillow knows Adobe's inverted CMYK; libjpeg-turbo only checks the data.
        _decode(data, "CMYK", (1, 1))
    if scale > 1:
        opened.draft("RGB", (min_side, min_side))  # type: ignore[arg-type]  # scale > 1: set
    opened.load()
    return to_rgb(opened)


def draft_scale(width: int, height: int, min_side: int | None) -> int:
    if not min_side:
        return 1
    most = min(width // min_side, height // min_side)
    return next((scale for scale in _DRAFT_SCALES if most >= scale), 1)


def _decode(data: bytes, colorspace: str, least: tuple[int, int]) -> np.ndarray | None:
    """libjpeg-turbo's pixels, strictly; None when only a harmless warning stands in the way
    (libjpeg-turbo refuses those in the header even when not strict: Pillow decodes those)."""
    for strict in (True, False):
        try:
            pixels: np.ndarray = simplejpeg.decode_jpeg(
                data, colorspace, min_width=least[0], min_height=least[1], strict=strict
            )
            return pixels
        except ValueError as error:
            if not any(text in str(error) for text in _HARMLESS):
                raise
    return None


@dataclass(frozen=True)
class _Frame:
    width: int
    height: int
    sampling: dict[int, tuple[int, int]]  # component id -> (horizontal, vertical) factors

    def blocks(self, components: list[int]) -> tuple[int, int]:
        """(8×8 blocks, MCUs) one scan over ``components`` codes (ITU T.81, A.2)."""
        h_max = max(h for h, _ in self.sampling.values())
        v_max = max(v for _, v in self.sampling.values())
        if len(components) == 1:
            h, v = self.sampling[components[0]]
            wide = math.ceil(math.ceil(self.width * h / h_max) / 8)
            tall = math.ceil(math.ceil(self.height * v / v_max) / 8)
            return wide * tall, wide * tall
        mcus = math.ceil(self.width / (8 * h_max)) * math.ceil(self.height / (8 * v_max))
        per_mcu = sum(self.sampling[c][0] * self.sampling[c][1] for c in components)
        return mcus * per_mcu, mcus


def check_segment(data: bytes, least: tuple[int, int]) -> None:
    """Refuse (``corrupt``) a JPEG stream inside another file (a TIFF strip or tile) that is
    damaged, or whose frame is smaller than the ``least`` (width, height) the file expects of it:
    the container's decoder would fill what is missing with black."""
    frame = check_structure(data)
    if frame is not None and (frame.width < least[0] or frame.height < least[1]):
        raise ImageRejectedError(
            "the image is incomplete: a JPEG part of it that should hold "
            f"{least[0]:,}×{least[1]:,} pixels holds {frame.width:,}×{frame.height:,}",
            code="corrupt",
        )
    _check_entropy_data(data, frame)


def check_data(data: bytes) -> None:
    """Refuse (``corrupt``) a JPEG whose data is damaged anywhere, as the CPU decode would.

    For callers that decode the pixels elsewhere (nvJPEG): ``check_structure`` plus a strict
    libjpeg-turbo decode at the smallest DCT scale, which still reads every Huffman code of
    every scan, so a scan cut short (even with an end marker appended) or a code that does not
    decode is refused whatever the other decoder would make of it. It costs about half a full
    decode (benchmarks/decode.py): the entropy decoding is most of a decode's work.
    """
    _check_entropy_data(data, check_structure(data))


def _check_entropy_data(data: bytes, frame: _Frame | None) -> None:
    components = len(frame.sampling) if frame is not None else 3
    colorspace = {1: "GRAY", 4: "CMYK"}.get(components, "RGB")
    _decode(data, colorspace, (1, 1))  # strictly, at the smallest scale: damage raises


def check_structure(data: bytes) -> _Frame | None:
    """Refuse (``corrupt``) a JPEG whose structure shows missing data, from the markers alone:

    * a sequential scan holding less data than its blocks need, or fewer restart markers;
    * a frame whose scans leave a component without data (a sequential file cut after its
      luminance scan), or, progressive, leave coefficients not refined to the end (a file cut
      after its first scans): both would decode with grey or blurred parts;
    * (``unsupported_format``) arithmetic coding, whose damage cannot be told (see above).

    Returns the frame when the end marker was reached with one, else None.
    """
    frame: _Frame | None = None
    progressive = False
    restart = 0
    covered: dict[int, set[int]] = {}  # component -> coefficients finished (Al = 0)
    at = 2  # after SOI
    while at + 2 <= len(data):
        if data[at] != 0xFF:
            return None  # not where a marker should be: the decoder has the final word
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0xD9:
            if frame is not None:
                _check_complete(frame, covered, progressive)
            return frame
        if marker in _STANDALONE:
            at += 2
            continue
        if at + 4 > len(data):
            return None
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        body = data[at + 4 : at + 2 + length]
        if marker in _SOF_ARITHMETIC:
            raise ImageRejectedError(
                "arithmetic-coded JPEGs are not accepted: damage in them cannot be detected, and "
                "most software cannot display them; save the image again as a standard JPEG",
                code="unsupported_format",
            )
        if marker in _SOF_OTHER - {_SOF_PROGRESSIVE}:
            return None  # lossless, hierarchical: left to the decoder
        if marker in _SOF_SEQUENTIAL | {_SOF_PROGRESSIVE} and len(body) >= 6:
            frame = _read_frame(body)
            progressive = marker == _SOF_PROGRESSIVE
        elif marker == 0xDD and len(body) >= 2:
            restart = int.from_bytes(body[:2], "big")
        elif marker == 0xDA and body:
            count = body[0]
            components = [body[1 + 2 * i] for i in range(count) if 2 + 2 * i < len(body)]
            tail = body[1 + 2 * count : 4 + 2 * count]
            if len(tail) == 3:
                first, last, approximation = tail[0], tail[1], tail[2] & 15
                if approximation == 0:
                    for component in components:
                        covered.setdefault(component, set()).update(range(first, last + 1))
            scan_frame = None if progressive else frame
            at = _check_scan(data, at + 2 + length, scan_frame, components, restart)
            continue
        at += 2 + length
    return None


def _check_complete(frame: _Frame, covered: dict[int, set[int]], progressive: bool) -> None:
    wanted = set(range(64)) if progressive else {0}
    for component in frame.sampling:
        if not wanted <= covered.get(component, set()):
            raise ImageRejectedError(
                "the JPEG image is incomplete: it ends before its last scan "
                f"({frame.width:,}×{frame.height:,} pixels)",
                code="corrupt",
            )


def _read_frame(body: bytes) -> _Frame | None:
    height, width = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big")
    sampling = {}
    for i in range(body[5]):
        entry = body[6 + 3 * i : 9 + 3 * i]
        if len(entry) < 3 or not entry[1] >> 4 or not entry[1] & 15:
            return None
        sampling[entry[0]] = (entry[1] >> 4, entry[1] & 15)
    return _Frame(width, height, sampling) if width and height and sampling else None


def _check_scan(
    data: bytes, start: int, frame: _Frame | None, components: list[int], restart: int
) -> int:
    """Where the scan starting at ``start`` ends, once its size and restart markers are checked."""
    found = _SCAN_END.search(data, start)
    if found is None:
        return len(data)  # no end marker: the door's decode reports the truncation
    end = found.start()
    if frame is None or not components or any(c not in frame.sampling for c in components):
        return end
    blocks, mcus = frame.blocks(components)
    restarts = len(_RESTART.findall(data, start, end))
    if 8 * (end - start) < 2 * blocks or (restart and restarts < math.ceil(mcus / restart) - 1):
        raise ImageRejectedError(
            f"the JPEG image is incomplete: its {frame.width:,}×{frame.height:,} pixels need more "
            "data than the file holds",
            code="corrupt",
        )
    return end
