"""The JPEG structure check (``vizdex.imaging.jpeg.check_structure``) against ITU T.81.

The device path decodes pixels elsewhere (nvJPEG), so this check alone stands between a damaged
file and a grey-filled one there. Each sequential scan must hold at least two bits per 8×8 block
and, with restart intervals, one marker per interval; the block counts below are worked out
from the standard (A.2: MCUs of Hmax·8 × Vmax·8 pixels, a non-interleaved scan codes one block
per MCU over its own component's size), not read off the code.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np
import pytest
from PIL import Image

from vizdex.core.errors import ImageRejectedError
from vizdex.imaging import ImageInputSettings, decode_image_bytes
from vizdex.imaging.jpeg import _SCAN_END, check_segment, check_structure

SETTINGS = ImageInputSettings()
WIDTH, HEIGHT = 37, 23  # neither a multiple of 8 nor of 16: partial blocks and MCUs count
SOI, EOI = b"\xff\xd8", b"\xff\xd9"


def photo(width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def jpeg(mode: str = "RGB", width: int = WIDTH, height: int = HEIGHT, **options: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(photo(width, height)).convert(mode).save(out, "JPEG", quality=90, **options)
    return out.getvalue()


def grey_sampled_2x2() -> bytes:
    """A one-component JPEG whose frame declares 2×2 sampling (legal; the scan is then
    non-interleaved, so its blocks are still those of the component's own size)."""
    data = bytearray(jpeg("L"))
    sof = data.index(b"\xff\xc0")
    assert data[sof + 9] == 1 and data[sof + 11] == 0x11  # one component, 1×1
    data[sof + 11] = 0x22
    return bytes(data)


def scan_start(data: bytes) -> int:
    sos = data.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")


def with_scan(data: bytes, scan: bytes) -> bytes:
    """``data``'s headers, then ``scan`` as its entropy-coded data, then the end marker."""
    return data[: scan_start(data)] + scan + EOI


def before_scan(data: bytes, segment: bytes) -> bytes:
    sos = data.index(b"\xff\xda")
    return data[:sos] + segment + data[sos:]


# (kind, JPEG, 8×8 blocks its one scan codes, MCUs in that scan)
GEOMETRIES = {
    # Y 2×2, Cb and Cr 1×1: MCUs of 16×16 → 3 × 2 = 6, each 4 + 1 + 1 blocks.
    "420": (lambda: jpeg(subsampling=2), 36, 6),
    # Y 2×1: MCUs of 16×8 → 3 × 3 = 9, each 2 + 1 + 1 blocks.
    "422": (lambda: jpeg(subsampling=1), 36, 9),
    # All 1×1: MCUs of 8×8 → 5 × 3 = 15, each 3 blocks.
    "444": (lambda: jpeg(subsampling=0), 45, 15),
    # One component: a block per MCU, 5 × 3.
    "grey": (lambda: jpeg("L"), 15, 15),
    # One component at 2×2 of itself: still 37×23 pixels, 5 × 3 blocks.
    "grey_2x2": (grey_sampled_2x2, 15, 15),
    # 70 wide: 9 blocks a row (70 / 8 rounded up; 37 happens to give 5 whichever way it is
    # counted, 70 does not), 9 × 3.
    "grey_70": (lambda: jpeg("L", width=70), 27, 27),
}


@pytest.mark.parametrize("kind", sorted(GEOMETRIES))
def test_a_scan_with_two_bits_per_block_passes_and_one_byte_less_is_refused(kind: str) -> None:
    make, blocks, _mcus = GEOMETRIES[kind]
    data = make()
    check_structure(data)
    enough = math.ceil(2 * blocks / 8)
    check_structure(with_scan(data, b"\x55" * enough))
    with pytest.raises(ImageRejectedError, match="need more data than the file holds") as caught:
        check_structure(with_scan(data, b"\x55" * (enough - 1)))
    assert caught.value.code == "corrupt"


@pytest.mark.parametrize("kind", sorted(GEOMETRIES))
def test_a_scan_needs_a_restart_marker_between_each_two_intervals(kind: str) -> None:
    make, _blocks, mcus = GEOMETRIES[kind]
    data = before_scan(make(), b"\xff\xdd\x00\x04\x00\x01")  # restart after every MCU
    intervals = [b"\x55" * 8 for _ in range(mcus)]  # far more than two bits per block

    def joined(parts: list[bytes]) -> bytes:
        markers = [bytes([0xFF, 0xD0 + index % 8]) for index in range(len(parts) - 1)]
        return b"".join(part + marker for part, marker in zip(parts, [*markers, b""], strict=True))

    check_structure(with_scan(data, joined(intervals)))
    one_lost = [*intervals[:-2], intervals[-2] + intervals[-1]]
    with pytest.raises(ImageRejectedError, match="need more data than the file holds"):
        check_structure(with_scan(data, joined(one_lost)))


def test_a_jpeg_part_smaller_than_its_container_expects_is_refused() -> None:
    """A TIFF strip or tile's JPEG stream must cover the (width, height) the container gives it;
    one pixel short in either direction alone is refused (libtiff would fill it with black).
    Whole streams of one, three or four components pass (each decoded in its own colour space:
    libjpeg-turbo cannot turn CMYK into RGB)."""
    for mode in ("L", "RGB", "CMYK"):
        check_segment(jpeg(mode), (WIDTH, HEIGHT))
    data = jpeg()  # 37×23
    check_segment(data, (WIDTH - 20, HEIGHT - 20))
    for least in [(WIDTH + 1, HEIGHT), (WIDTH, HEIGHT + 1)]:
        with pytest.raises(ImageRejectedError, match=f"holds {WIDTH}×{HEIGHT}") as caught:
            check_segment(data, least)
        assert caught.value.code == "corrupt"
        assert f"should hold {least[0]}×{least[1]} pixels" in caught.value.message


def _scan_starts(data: bytes) -> list[int]:
    return [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xda"]


def test_a_progressive_jpeg_cut_after_any_scan_but_its_last_is_refused() -> None:
    """Until the last refinement scans, some coefficients lack their low bits: a blurred or
    banded image that decodes without a warning."""
    data = jpeg(progressive=True, width=64, height=48)
    check_structure(data)
    starts = _scan_starts(data)
    assert len(starts) > 5
    for kept in range(1, len(starts)):
        with pytest.raises(ImageRejectedError, match="ends before its last scan"):
            check_structure(data[: starts[kept]] + EOI)


def _claims_more_pixels() -> bytes:
    """A whole 64×48 JPEG whose frame header claims 7000×7000 pixels."""
    data = bytearray(jpeg(width=64, height=48))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (7000).to_bytes(2, "big") * 2
    return bytes(data)


@pytest.mark.parametrize(
    ("inserted", "before"),
    [
        (b"\xff", b"\xff\xc0"),  # a fill byte before the frame header
        (b"\xff\xff\xff", b"\xff\xdb"),  # several, before the quantisation tables
        (b"\xff\x01", b"\xff\xc0"),  # TEM, a marker without a length
        (b"\xff\xd3", b"\xff\xc4"),  # a stray restart marker between header segments
    ],
)
def test_fill_bytes_and_standalone_markers_do_not_end_the_check(
    inserted: bytes, before: bytes
) -> None:
    data = _claims_more_pixels()
    at = data.index(before)
    with pytest.raises(ImageRejectedError, match="need more data than the file holds"):
        check_structure(data[:at] + inserted + data[at:])


def test_extra_huffman_tables_are_not_read_as_a_scan() -> None:
    """Encoders may define tables a file never uses (here DC table 1, one 1-bit code): the
    segment before the scan is headers, whatever its bytes look like."""
    data = jpeg("L", width=64, height=48)
    table = b"\x01" + bytes([1] + [0] * 15) + b"\x00"
    extra = before_scan(data, b"\xff\xc4" + (2 + len(table)).to_bytes(2, "big") + table)
    check_structure(extra)
    decoded = decode_image_bytes(extra, SETTINGS).image
    expected = Image.open(io.BytesIO(data)).convert("RGB")
    assert np.array_equal(np.asarray(decoded), np.asarray(expected))


def _variants() -> dict[str, bytes]:
    return {
        "baseline": jpeg(width=40, height=24),
        "progressive": jpeg(progressive=True, width=40, height=24),
        "grey": jpeg("L", width=40, height=24),
        "restarts": jpeg(width=40, height=24, restart_marker_blocks=2),
    }


@pytest.mark.parametrize("name", sorted(_variants()))
def test_any_cut_or_damaged_header_byte_is_passed_or_refused_never_a_crash(name: str) -> None:
    """Whatever the bytes, the answer is 'looks whole' or ``corrupt``: never an IndexError or a
    ZeroDivisionError, which the door would have to report as a server error."""
    data = _variants()[name]
    damaged = [data[:end] for end in range(len(data))]
    damaged += [
        data[:at] + bytes([value]) + data[at + 1 :]
        for at in range(2, scan_start(data))
        # 0x01, 0x10, 0x04, 0x40: a zero sampling factor (beside a 1, or a 4: above 3)
        for value in (0x00, 0x01, 0x10, 0x04, 0x40, 0x11, 0xFF)
    ]
    for candidate in damaged:
        try:
            check_structure(candidate)
        except ImageRejectedError as error:
            assert error.code == "corrupt"


def test_the_scan_end_is_where_the_fill_run_before_a_marker_ends() -> None:
    """The fast pattern finds what ``\\xff+[^\\x00\\xd0-\\xd7\\xff]`` found: the last 0xFF of a
    fill run followed by a marker code, never a stuffed FF 00 or a restart marker."""
    reference = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")
    rng = np.random.default_rng(0)
    alphabet = [0x00, 0x12, 0xC4, 0xD0, 0xD7, 0xD8, 0xD9, 0xFE, 0xFF]
    for _ in range(20_000):
        data = bytes(rng.choice(alphabet, size=int(rng.integers(0, 12))))
        expected = reference.search(data)
        found = _SCAN_END.search(data)
        assert (found and found.start()) == (expected and expected.end() - 2), data.hex()
