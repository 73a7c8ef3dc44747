"""Image inputs for the image-door tests, generated in memory (no binary fixtures in the repo).

Bombs and odd files are written byte by byte so that they are exactly what their names say: a PNG
whose IHDR claims 60,000×60,000 with a valid CRC, a GIF with thousands of frames, and so on.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def solid(mode: str, size: tuple[int, int], colour: Any) -> Image.Image:
    return Image.new(mode, size, colour)


# --- PNG --------------------------------------------------------------------------------------


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A valid PNG header for ``width``×``height`` RGB followed by a small IDAT of zeros.

    The IDAT decompresses to 10 MB of zeros (a start on the 10.8 GB the header promises).
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 10_000_000, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def png_black(width: int = 5000, height: int = 5000) -> bytes:
    """A complete, valid black RGB PNG built row by row, so making it needs little memory."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * width)  # filter byte + pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


# Adam7 passes: (first column, first row, column step, row step)
ADAM7 = (
    (0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
    (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2),
)  # fmt: skip


def png_scanlines(pixels: np.ndarray, *, interlaced: bool = False) -> bytes:
    """The inflated image data of an 8-bit RGB PNG of ``pixels`` (H×W×3): filter byte 0 rows,
    in Adam7 pass order when ``interlaced`` (Pillow cannot write interlaced PNGs)."""
    passes = ADAM7 if interlaced else ((0, 0, 1, 1),)
    rows: list[bytes] = []
    for x0, y0, dx, dy in passes:
        part = pixels[y0::dy, x0::dx]
        if part.shape[0] and part.shape[1]:
            rows.extend(b"\x00" + row.tobytes() for row in part)
    return b"".join(rows)


def png_from_scanlines(
    width: int, height: int, scanlines: bytes, *, interlaced: bool = False
) -> bytes:
    """An 8-bit RGB PNG whose one IDAT holds ``scanlines`` as a complete zlib stream, however
    many rows they are: fewer than the header's makes a file Pillow decodes with black rows."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, int(interlaced))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(scanlines))
        + png_chunk(b"IEND", b"")
    )


def png_with_bad_crc() -> bytes:
    data = bytearray(encode(solid("RGB", (8, 8), RED), "PNG"))
    data[29] ^= 0xFF  # last byte of the IHDR CRC
    return bytes(data)


def i16_png(value: int, size: tuple[int, int] = (8, 8)) -> bytes:
    image = Image.fromarray(np.full((size[1], size[0]), value, dtype=np.uint16))
    assert image.mode == "I;16"
    return encode(image, "PNG")


# --- GIF --------------------------------------------------------------------------------------

# One 1×1 frame at (0, 0) drawing palette index 1 (blue): graphic control extension, image
# descriptor, LZW (min code size 2: clear, 1, end of information).
_GIF_BLUE_DOT = (
    b"\x21\xf9\x04\x00\x00\x00\x00\x00"
    + b"\x2c"
    + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
    + b"\x02\x02\x4c\x01\x00"
)


def gif_many_frames(extra_frames: int = 5000, size: tuple[int, int] = (64, 64)) -> bytes:
    """A red ``size`` first frame followed by ``extra_frames`` frames that paint (0, 0) blue.

    A decoder that looked past frame 0 would show blue at (0, 0).
    """
    first = Image.new("P", size, 0)
    first.putpalette([*RED, *BLUE])
    single = encode(first, "GIF", optimize=False)
    assert single.endswith(b"\x3b")
    body = b"GIF89a" + single[6:-1]  # 89a: graphic control extensions need it
    return body + _GIF_BLUE_DOT * extra_frames + b"\x3b"


# --- Header-only bombs of other formats -------------------------------------------------------


def jpeg_bomb(width: int = 65_000, height: int = 65_000) -> bytes:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3)
    sof += b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    sos = b"\xff\xda" + struct.pack(">HB", 12, 3) + b"\x01\x00\x02\x00\x03\x00\x00\x3f\x00"
    return b"\xff\xd8" + sof + sos + b"\x00" * 100 + b"\xff\xd9"


def gif_bomb() -> bytes:
    screen = struct.pack("<HHBBB", 65535, 65535, 0x80, 0, 0) + b"\xff\x00\x00\x00\x00\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 65535, 65535, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + frame + b"\x3b"


def bmp_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    header = b"BM" + struct.pack("<IHHI", 54, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)
    return header + info


def tiff_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 8),
        (277, 3, 1, 1),
        (278, 4, 1, height),
        (279, 4, 1, (width * height) & 0xFFFFFFFF),
    ]
    ifd = struct.pack("<H", len(entries))
    ifd += b"".join(struct.pack("<HHII", *entry) for entry in entries)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)


def webp_bomb(width: int = 16_383, height: int = 16_383) -> bytes:
    payload = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little")
    payload += (height - 1).to_bytes(3, "little")
    chunk = b"VP8X" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


# --- JPEG -------------------------------------------------------------------------------------


def marked_image(size: tuple[int, int] = (64, 32), block: int = 16) -> Image.Image:
    """Grey with a red block in the top-left corner: where the corner lands shows orientation."""
    image = Image.new("RGB", size, (128, 128, 128))
    image.paste(RED, (0, 0, block, block))
    return image


def jpeg_with_orientation(orientation: int, size: tuple[int, int] = (64, 32)) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(marked_image(size), "JPEG", quality=95, exif=exif)


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """Gradients plus noise: compresses like a photo, unlike a flat colour."""
    rng = np.random.default_rng(seed)
    ys = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    xs = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    base = np.stack([ys + 0 * xs, xs + 0 * ys, (xs + ys) / 2], axis=-1)
    noise = rng.normal(0, 20, size=(height, width, 3)).astype(np.float32)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


# --- Not images -------------------------------------------------------------------------------

FOREIGN_HEADERS: dict[str, bytes] = {
    "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n",
    "eps_binary": b"\xc5\xd0\xd3\xc6" + b"\x00" * 60,
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>',
    "svg_xml": b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
    "pdf": b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n%%EOF\n",
    "ico": b"\x00\x00\x01\x00\x01\x00\x10\x10" + b"\x00" * 60,
    "heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
    "psd": b"8BPS\x00\x01" + b"\x00" * 40,
    "html": b"<!DOCTYPE html><html><body>hi</body></html>",
    "zip": b"PK\x03\x04" + b"\x00" * 40,
}


@functools.cache
def png_of_size(width: int, height: int) -> bytes:
    """A valid grey PNG of any size: one flat colour compresses to almost nothing."""
    body = zlib.compress((b"\x00" + b"\x80" * width) * height, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return len(data).to_bytes(4, "big") + kind + data + crc.to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x00\x00\x00\x00"
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )
