"""The image door: formats, modes, orientation, draft decoding, bombs, refusals, input parsing."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import pathlib
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from PIL import GifImagePlugin, Image, ImageFile

from tests.support import image_corpus as corpus
from tests.support.decode_work import DecodeWork, counting_decodes
from vizdex.core.errors import ImageRejectedError, InvalidInputError
from vizdex.imaging import (
    DecodedImage,
    ImageInputSettings,
    decode_image_bytes,
    load_image,
    read_header,
    read_input,
    sniff_format,
    to_rgb,
)

SETTINGS = ImageInputSettings()
WHITE = (255, 255, 255)
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def close_to(actual: Any, expected: tuple[int, int, int], tolerance: int) -> bool:
    return all(abs(int(a) - b) <= tolerance for a, b in zip(actual, expected, strict=True))


def rejected(data: bytes, code: str, settings: ImageInputSettings = SETTINGS) -> ImageRejectedError:
    with pytest.raises(ImageRejectedError) as caught:
        decode_image_bytes(data, settings)
    assert caught.value.code == code, caught.value.message
    return caught.value


def decode_once(data: bytes, *, decoders: int = 1, **kwargs: Any) -> DecodedImage:
    """Decode through the door, which must start exactly ``decoders`` pixel decoders.

    One for an image (a tile, a frame, a draft scale): no second pass, no frame walk. Bounded
    work is what a stopwatch used to stand in for; a hang is pytest-timeout's to catch.
    """
    with counting_decodes() as work:
        decoded = decode_image_bytes(data, SETTINGS, **kwargs)
    assert work.decoders == decoders, work
    return decoded


# --- Every accepted format and mode -----------------------------------------------------------


def _p_image(index: int) -> Image.Image:
    image = Image.new("P", (16, 8), index)
    image.putpalette([*corpus.RED, *corpus.BLUE])
    return image


def _i16(value: int) -> Image.Image:
    return Image.fromarray(np.full((8, 16), value, dtype=np.uint16))


def _frames(fmt: str, **params: Any) -> bytes:
    first = corpus.solid("RGB", (16, 8), corpus.RED)
    second = corpus.solid("RGB", (16, 8), corpus.BLUE)
    if fmt == "GIF":
        first, second = first.convert("P"), second.convert("P")
    return corpus.encode(first, fmt, save_all=True, append_images=[second], **params)


Case = tuple[Callable[[], bytes], str, tuple[int, int, int], int]

ACCEPTED: dict[str, Case] = {
    "jpeg_rgb": (
        lambda: corpus.encode(corpus.solid("RGB", (16, 8), (200, 30, 40)), "JPEG", quality=95),
        "JPEG",
        (200, 30, 40),
        6,
    ),
    "jpeg_l": (
        lambda: corpus.encode(corpus.solid("L", (16, 8), 100), "JPEG"),
        "JPEG",
        (100, 100, 100),
        3,
    ),
    "jpeg_cmyk": (
        lambda: corpus.encode(corpus.solid("CMYK", (16, 8), (0, 255, 255, 0)), "JPEG"),
        "JPEG",
        corpus.RED,
        12,
    ),
    "png_rgb": (
        lambda: corpus.encode(corpus.solid("RGB", (16, 8), (1, 2, 3)), "PNG"),
        "PNG",
        (1, 2, 3),
        0,
    ),
    "png_rgba_transparent": (
        lambda: corpus.encode(corpus.solid("RGBA", (16, 8), (255, 0, 0, 0)), "PNG"),
        "PNG",
        WHITE,
        0,
    ),
    "png_rgba_half": (
        lambda: corpus.encode(corpus.solid("RGBA", (16, 8), (255, 0, 0, 128)), "PNG"),
        "PNG",
        (255, 127, 127),
        1,
    ),
    "png_la_transparent": (
        lambda: corpus.encode(corpus.solid("LA", (16, 8), (10, 0)), "PNG"),
        "PNG",
        WHITE,
        0,
    ),
    "png_la_opaque": (
        lambda: corpus.encode(corpus.solid("LA", (16, 8), (50, 255)), "PNG"),
        "PNG",
        (50, 50, 50),
        0,
    ),
    "png_l": (lambda: corpus.encode(corpus.solid("L", (16, 8), 77), "PNG"), "PNG", (77, 77, 77), 0),
    "png_p": (lambda: corpus.encode(_p_image(1), "PNG"), "PNG", corpus.BLUE, 0),
    "png_p_transparency": (
        lambda: corpus.encode(_p_image(1), "PNG", transparency=1),
        "PNG",
        WHITE,
        0,
    ),
    "png_rgb_colour_key": (
        lambda: corpus.encode(
            corpus.solid("RGB", (16, 8), (1, 2, 3)), "PNG", transparency=(1, 2, 3)
        ),
        "PNG",
        WHITE,
        0,
    ),
    "png_i16_max": (lambda: corpus.encode(_i16(65535), "PNG"), "PNG", WHITE, 0),
    "png_i16_mid": (lambda: corpus.encode(_i16(128 * 257), "PNG"), "PNG", (128, 128, 128), 0),
    "png_i16_zero": (lambda: corpus.encode(_i16(0), "PNG"), "PNG", (0, 0, 0), 0),
    "png_1bit": (lambda: corpus.encode(corpus.solid("1", (16, 8), 1), "PNG"), "PNG", WHITE, 0),
    "webp_rgb": (
        lambda: corpus.encode(corpus.solid("RGB", (16, 8), (0, 200, 0)), "WEBP", quality=95),
        "WEBP",
        (0, 200, 0),
        8,
    ),
    "webp_rgba_transparent": (
        lambda: corpus.encode(corpus.solid("RGBA", (16, 8), (0, 0, 255, 0)), "WEBP", lossless=True),
        "WEBP",
        WHITE,
        0,
    ),
    "webp_animated_first_frame": (lambda: _frames("WEBP", lossless=True), "WEBP", corpus.RED, 0),
    "gif_p": (lambda: corpus.encode(_p_image(1), "GIF"), "GIF", corpus.BLUE, 0),
    "gif_transparency": (
        lambda: corpus.encode(_p_image(1), "GIF", transparency=1),
        "GIF",
        WHITE,
        0,
    ),
    "gif_animated_first_frame": (lambda: _frames("GIF"), "GIF", corpus.RED, 0),
    "bmp_rgb": (
        lambda: corpus.encode(corpus.solid("RGB", (16, 8), (9, 8, 7)), "BMP"),
        "BMP",
        (9, 8, 7),
        0,
    ),
    "bmp_1bit": (lambda: corpus.encode(corpus.solid("1", (16, 8), 0), "BMP"), "BMP", (0, 0, 0), 0),
    "bmp_l": (
        lambda: corpus.encode(corpus.solid("L", (16, 8), 200), "BMP"),
        "BMP",
        (200, 200, 200),
        0,
    ),
    "tiff_rgb": (
        lambda: corpus.encode(corpus.solid("RGB", (16, 8), (4, 5, 6)), "TIFF"),
        "TIFF",
        (4, 5, 6),
        0,
    ),
    "tiff_rgba_transparent": (
        lambda: corpus.encode(corpus.solid("RGBA", (16, 8), (0, 0, 0, 0)), "TIFF"),
        "TIFF",
        WHITE,
        0,
    ),
    "tiff_cmyk": (
        lambda: corpus.encode(corpus.solid("CMYK", (16, 8), (255, 0, 255, 0)), "TIFF"),
        "TIFF",
        (0, 255, 0),
        0,
    ),
    "tiff_i16": (lambda: corpus.encode(_i16(65535), "TIFF"), "TIFF", WHITE, 0),
    "tiff_i16_big_endian": (
        lambda: corpus.encode(Image.new("I;16B", (16, 8), 128 * 257), "TIFF"),
        "TIFF",
        (128, 128, 128),
        0,
    ),
    "tiff_i32": (
        lambda: corpus.encode(Image.fromarray(np.full((8, 16), 65535, np.int32)), "TIFF"),
        "TIFF",
        WHITE,
        0,
    ),
    "tiff_float": (
        lambda: corpus.encode(Image.fromarray(np.full((8, 16), 0.5, np.float32)), "TIFF"),
        "TIFF",
        (128, 128, 128),
        0,
    ),
    "tiff_1bit": (lambda: corpus.encode(corpus.solid("1", (16, 8), 1), "TIFF"), "TIFF", WHITE, 0),
    "tiff_l": (
        lambda: corpus.encode(corpus.solid("L", (16, 8), 33), "TIFF"),
        "TIFF",
        (33, 33, 33),
        0,
    ),
    "tiff_ycbcr": (
        lambda: corpus.encode(corpus.solid("RGB", (16, 8), corpus.BLUE).convert("YCbCr"), "TIFF"),
        "TIFF",
        corpus.BLUE,
        3,
    ),
    "tiff_first_page": (lambda: _frames("TIFF"), "TIFF", corpus.RED, 0),
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted_format_and_mode(name: str) -> None:
    make, fmt, colour, tolerance = ACCEPTED[name]
    data = make()
    # A CMYK JPEG is checked by libjpeg-turbo first, then decoded by Pillow (Adobe's inversion).
    decoded = decode_once(data, decoders=2 if name == "jpeg_cmyk" else 1)
    assert decoded.format == fmt
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (16, 8)
    assert (decoded.width, decoded.height) == (16, 8)
    assert decoded.byte_size == len(data)
    assert decoded.sha256 == hashlib.sha256(data).hexdigest()
    pixel = decoded.image.getpixel((3, 3))
    assert close_to(pixel, colour, tolerance), f"{name}: got {pixel}, expected {colour}"


def test_a_digest_the_caller_already_has_is_kept_not_recomputed() -> None:
    """Ingestion hashes the bytes before it decodes them: the decode reuses that digest."""
    data = corpus.encode(corpus.photo_like(96, 64), "JPEG")
    digest = hashlib.sha256(data).hexdigest()
    given = decode_image_bytes(data, SETTINGS, sha256=digest)
    assert given.sha256 == digest
    # Taken as given (the caller vouches for it): a stand-in shows it was not hashed again.
    assert decode_image_bytes(data, SETTINGS, sha256="0" * 64).sha256 == "0" * 64
    assert decode_image_bytes(data, SETTINGS).sha256 == digest
    assert given.image.tobytes() == decode_image_bytes(data, SETTINGS).image.tobytes()


def test_to_rgb_palette_with_alpha_goes_on_white() -> None:
    pa = _p_image(0).convert("PA")
    pa.putalpha(0)
    assert pa.mode == "PA"
    assert to_rgb(pa).getpixel((0, 0)) == WHITE


def test_to_rgb_returns_rgb_images_without_copying() -> None:
    image = corpus.solid("RGB", (4, 4), corpus.RED)
    assert to_rgb(image) is image


def test_float_outside_unit_range_is_stretched_not_clipped() -> None:
    values = np.linspace(-1000.0, 1000.0, 16, dtype=np.float32).reshape(1, 16).repeat(8, axis=0)
    data = corpus.encode(Image.fromarray(values), "TIFF")
    row = [decode_image_bytes(data, SETTINGS).image.getpixel((x, 0)) for x in (0, 15)]
    assert row == [(0, 0, 0), WHITE]


def _grey_row(values: Sequence[float], dtype: type[np.generic]) -> list[int]:
    """``values`` as one row of a grey TIFF, decoded through the door: each pixel's red."""
    image = Image.fromarray(np.array([values], dtype=dtype))
    decoded = np.asarray(decode_image_bytes(corpus.encode(image, "TIFF"), SETTINGS).image)
    return [int(red) for red in decoded[0, :, 0]]


def test_16_bit_grey_is_scaled_even_when_dark() -> None:
    # 16-bit grey declares its range: 200 of 65535 is nearly black, not 200 of 255.
    assert _grey_row([0, 200, 65535], np.uint16) == [0, 1, 255]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 200], [0, 200]),  # an 8-bit range is kept
        ([0, 1000, 65535], [0, 4, 255]),  # a 16-bit range is scaled as 16-bit grey
        ([-5, 100], [0, 255]),  # anything else is stretched
        ([70_000, 170_000], [0, 255]),
    ],
)
def test_32_bit_grey_keeps_8_and_16_bit_ranges_and_stretches_others(
    values: list[int], expected: list[int]
) -> None:
    assert _grey_row(values, np.int32) == expected


def test_float_grey_in_the_unit_range_ignores_non_finite_values() -> None:
    # NaN and infinities carry no brightness: they become 0 and do not stretch the rest.
    row = _grey_row([0.0, 0.5, 1.0, float("nan"), float("inf"), float("-inf")], np.float32)
    assert row == [0, 128, 255, 0, 0, 0]


# --- EXIF orientation -------------------------------------------------------------------------

# Where the stored top-left red block must appear once the orientation is applied.
ORIENTATION_CORNER = {
    1: "top_left",
    2: "top_right",
    3: "bottom_right",
    4: "bottom_left",
    5: "top_left",
    6: "top_right",
    7: "bottom_right",
    8: "bottom_left",
}


def _corner(image: Image.Image, corner: str) -> Any:
    width, height = image.size
    x = 4 if corner.endswith("left") else width - 5
    y = 4 if corner.startswith("top") else height - 5
    return image.getpixel((x, y))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation: int) -> None:
    decoded = decode_once(corpus.jpeg_with_orientation(orientation, size=(64, 32)))
    expected_size = (32, 64) if orientation >= 5 else (64, 32)
    assert decoded.image.size == expected_size
    assert (decoded.width, decoded.height) == expected_size
    for corner in ("top_left", "top_right", "bottom_left", "bottom_right"):
        colour = corpus.RED if corner == ORIENTATION_CORNER[orientation] else (128, 128, 128)
        assert close_to(_corner(decoded.image, corner), colour, 12), (orientation, corner)


def test_broken_exif_does_not_reject_the_image() -> None:
    data = corpus.encode(corpus.solid("RGB", (16, 8), corpus.RED), "JPEG", exif=b"Exif\x00\x00junk")
    assert decode_image_bytes(data, SETTINGS).image.size == (16, 8)


# --- Draft decoding ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    return corpus.encode(corpus.solid("RGB", (4000, 3000), (90, 120, 150)), "JPEG", quality=90)


def test_draft_decoding_keeps_min_side_and_reports_original_size(big_jpeg: bytes) -> None:
    decoded = decode_once(big_jpeg, min_side=448)
    width, height = decoded.image.size
    assert min(width, height) >= 448
    assert width < 4000 and height < 3000
    assert (decoded.width, decoded.height) == (4000, 3000)
    assert close_to(decoded.image.getpixel((10, 10)), (90, 120, 150), 4)


def test_without_min_side_decodes_full_size(big_jpeg: bytes) -> None:
    decoded = decode_once(big_jpeg)
    assert decoded.image.size == (4000, 3000)


def test_draft_with_rotation_reports_rotated_original_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = corpus.encode(corpus.solid("RGB", (2000, 1000), corpus.RED), "JPEG", exif=exif)
    decoded = decode_once(data, min_side=200)
    assert (decoded.width, decoded.height) == (1000, 2000)
    assert decoded.image.size == (250, 500)  # 1/4 scale (1/8 would be < 200), then rotated


def test_draft_never_goes_below_min_side() -> None:
    data = corpus.encode(corpus.solid("RGB", (901, 450), corpus.RED), "JPEG")
    decoded = decode_once(data, min_side=448)
    assert min(decoded.image.size) >= 448


def test_min_side_is_ignored_for_other_formats() -> None:
    data = corpus.encode(corpus.solid("RGB", (1000, 1000), corpus.RED), "PNG")
    assert decode_once(data, min_side=100).image.size == (1000, 1000)


def test_min_side_must_be_positive() -> None:
    with pytest.raises(ValueError):
        decode_image_bytes(
            corpus.encode(corpus.solid("RGB", (8, 8), 0), "PNG"), SETTINGS, min_side=0
        )
    # One pixel is positive: the smallest draft scale that keeps a side of at least one.
    data = corpus.encode(corpus.solid("RGB", (64, 32), corpus.RED), "JPEG")
    assert decode_once(data, min_side=1).image.size == (8, 4)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_header_reports_the_size_as_displayed(orientation: int) -> None:
    data = corpus.jpeg_with_orientation(orientation, size=(64, 32))
    with counting_decodes() as work:
        width, height, seen = read_header(data, "JPEG", SETTINGS)
    assert (width, height) == ((32, 64) if orientation >= 5 else (64, 32))
    assert seen == orientation
    assert work.decoders == 0  # the header alone


# --- Pixel bombs and frame bombs --------------------------------------------------------------

BOMBS: dict[str, Callable[[], bytes]] = {
    "png_60k": corpus.png_bomb,
    "jpeg_65k": corpus.jpeg_bomb,
    "gif_65k": corpus.gif_bomb,
    "bmp_30k": corpus.bmp_bomb,
    "tiff_60k": corpus.tiff_bomb,
    "webp_16k": corpus.webp_bomb,
    "png_64mp_below_pillow_limit": lambda: corpus.png_bomb(8000, 8000),
    "png_100mp_between_pillow_limits": lambda: corpus.png_bomb(10_000, 10_000),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_pixel_bombs_are_refused_from_the_header(name: str) -> None:
    data = BOMBS[name]()
    assert len(data) < 100_000
    with counting_decodes() as work:
        error = rejected(data, "too_many_pixels")
    assert work == DecodeWork(decoders=0, loads=0)  # refused from the header: no pixel decoded
    assert "the limit is 50 MP" in error.message


def test_pixel_message_names_the_size() -> None:
    error = rejected(corpus.png_bomb(8000, 8000), "too_many_pixels")
    assert error.message == "image is 8,000×8,000 = 64 MP; the limit is 50 MP"


def test_own_pixel_cap_does_not_rely_on_pillow_global() -> None:
    data = corpus.encode(corpus.solid("RGB", (40, 30), corpus.RED), "PNG")
    error = rejected(data, "too_many_pixels", ImageInputSettings(max_pixels=1000))
    assert "40×30" in error.message
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS > 1000


def test_gif_with_thousands_of_frames_decodes_only_the_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = corpus.gif_many_frames(5000)
    # The corpus is honest: the second frame really paints (0, 0) blue.
    with Image.open(io.BytesIO(data)) as probe:
        probe.seek(1)
        assert probe.convert("RGB").getpixel((0, 0)) == corpus.BLUE

    frames: list[int] = []
    original_seek = GifImagePlugin.GifImageFile._seek

    def spy(self: GifImagePlugin.GifImageFile, frame: int, update_image: bool = True) -> None:
        frames.append(frame)
        original_seek(self, frame, update_image)

    monkeypatch.setattr(GifImagePlugin.GifImageFile, "_seek", spy)
    decoded = decode_once(data)
    assert decoded.image.getpixel((0, 0)) == corpus.RED
    assert decoded.image.size == (64, 64)
    assert frames == [0]


# Peak memory is read from the child's own VmHWM (reset just before decoding), not ru_maxrss:
# on Linux ru_maxrss is inherited across fork/exec, so under pytest it starts at the parent's peak.
MEMORY_PROBE = textwrap.dedent(
    """
    import json, sys
    from tests.support import image_corpus as corpus
    from tests.support.decode_work import counting_decodes
    from vizdex.core.errors import ImageRejectedError
    from vizdex.imaging import ImageInputSettings, decode_image_bytes

    def status_kb(field):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise LookupError(field)

    data = getattr(corpus, sys.argv[1])()
    before = status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset the peak-RSS mark to the current RSS
    with counting_decodes() as work:
        try:
            decoded = decode_image_bytes(data, ImageInputSettings())
            outcome = "ok:" + "x".join(map(str, decoded.image.size))
        except ImageRejectedError as exc:
            outcome = exc.code
    peak = status_kb("VmHWM")
    report = {"outcome": outcome, "decoders": work.decoders, "peak_mb": (peak - before) / 1024}
    print(json.dumps(report))
    """
)


@pytest.mark.parametrize(
    ("factory", "outcome"),
    [
        ("png_bomb", "too_many_pixels"),
        ("jpeg_bomb", "too_many_pixels"),
        ("gif_bomb", "too_many_pixels"),
        ("tiff_bomb", "too_many_pixels"),
        ("webp_bomb", "too_many_pixels"),
        ("bmp_bomb", "too_many_pixels"),
        ("gif_many_frames", "ok:64x64"),
        ("png_black", "ok:5000x5000"),  # control: a real 25 MP decode must show up in the probe
    ],
)
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_bombs_stay_within_memory_bounds(factory: str, outcome: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, factory],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["outcome"] == outcome
    # Bombs are refused before any decoder starts; the controls decode one frame, once.
    assert report["decoders"] == (1 if outcome.startswith("ok:") else 0)
    assert report["peak_mb"] < 200
    if factory == "png_black":
        assert report["peak_mb"] > 50  # 75 MB of RGB: proves the probe sees decoder memory


# --- Refusals ---------------------------------------------------------------------------------


def _jpeg() -> bytes:
    return corpus.encode(corpus.photo_like(256, 256), "JPEG", quality=90)


def _png() -> bytes:
    return corpus.encode(corpus.photo_like(256, 256), "PNG")


CORRUPT: dict[str, Callable[[], bytes]] = {
    "truncated_jpeg": lambda: corpus.truncated(_jpeg()),
    "truncated_png": lambda: corpus.truncated(_png()),
    "truncated_webp": lambda: corpus.truncated(corpus.encode(corpus.photo_like(64, 64), "WEBP")),
    "truncated_gif": lambda: corpus.truncated(
        corpus.encode(corpus.photo_like(64, 64).convert("P"), "GIF")
    ),
    "truncated_tiff": lambda: corpus.truncated(corpus.encode(corpus.photo_like(64, 64), "TIFF")),
    "truncated_bmp": lambda: corpus.truncated(corpus.encode(corpus.photo_like(64, 64), "BMP")),
    "png_bad_crc": corpus.png_with_bad_crc,
    "jpeg_magic_then_junk": lambda: b"\xff\xd8\xff" + os.urandom(500),
    "png_signature_only": lambda: b"\x89PNG\r\n\x1a\n",
    "gif_header_only": lambda: b"GIF89a",
    "bmp_magic_then_junk": lambda: b"BM" + b"\x00" * 10,
    "tiff_bad_ifd": lambda: b"II*\x00\xff\xff\xff\x7f" + b"\x00" * 20,
    "webp_junk": lambda: b"RIFF\x10\x00\x00\x00WEBPVP8 junkjunk",
}


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_damaged_files_are_refused_never_half_decoded(name: str) -> None:
    with counting_decodes() as work:
        rejected(CORRUPT[name](), "corrupt")
    # Refused at the first failing decode: no retry loop, no guessing past the damage. A PNG can
    # fail twice: once reading trailing EXIF chunks (an error there is ignored), once decoding.
    assert work.decoders <= (2 if name == "truncated_png" else 1), work


def test_load_truncated_images_stays_false() -> None:
    rejected(corpus.truncated(_jpeg()), "corrupt")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_door_refuses_to_run_with_truncated_loading_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError):
        decode_image_bytes(_jpeg(), SETTINGS)


@pytest.mark.parametrize("name", sorted(corpus.FOREIGN_HEADERS))
def test_foreign_formats_never_reach_pillow(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[object] = []
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a))
    error = rejected(corpus.FOREIGN_HEADERS[name], "unsupported_format")
    assert opened == []
    assert "JPEG, PNG, WebP, GIF, BMP or TIFF" in error.message


@pytest.mark.parametrize(
    ("name", "word"),
    [("eps", "EPS"), ("svg", "SVG"), ("pdf", "PDF"), ("ico", "ICO"), ("heic", "HEIC")],
)
def test_foreign_formats_are_named(name: str, word: str) -> None:
    assert word in rejected(corpus.FOREIGN_HEADERS[name], "unsupported_format").message


def test_random_bytes_are_unsupported() -> None:
    noise = bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8))
    rejected(b"\x13\x37" + noise, "unsupported_format")  # a prefix no signature starts with


def test_pillow_is_told_the_sniffed_format(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    real_open = Image.open

    def spy(fp: Any, mode: Any = "r", formats: Any = None) -> Any:
        seen.append(formats)
        return real_open(fp, mode, formats)

    monkeypatch.setattr(Image, "open", spy)
    decode_image_bytes(corpus.encode(corpus.solid("RGB", (8, 8), 0), "PNG"), SETTINGS)
    assert seen == [("PNG",)]


def test_sniff_format_needs_magic_bytes() -> None:
    assert sniff_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "WEBP"
    assert sniff_format(b"MM\x00*\x00\x00\x00\x08") == "TIFF"
    with pytest.raises(ImageRejectedError):
        sniff_format(b"RIFF\x00\x00\x00\x00WAVEfmt ")


def test_empty_input() -> None:
    rejected(b"", "empty")


def test_byte_cap_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("decoded before size check"))
    error = rejected(
        b"\xff\xd8\xff" + b"\x00" * 2000, "too_large", ImageInputSettings(max_bytes=1000)
    )
    assert error.message == "the image is 2 kB; the limit is 1 kB"


# --- Input parsing: base64, data URLs, mappings -----------------------------------------------


@pytest.fixture(scope="module")
def png_bytes() -> bytes:
    data = corpus.encode(corpus.solid("RGB", (7, 5), corpus.RED), "PNG")
    return data + b"\x00" * ((1 - len(data)) % 3)  # bytes after IEND are ignored; forces "=="


def _variants(data: bytes) -> dict[str, str]:
    b64 = base64.b64encode(data).decode()
    assert b64.endswith("==") and "+" in b64  # padding and URL-safe variants really differ
    return {
        "padded": b64,
        "unpadded": b64.rstrip("="),
        "wrapped": "\n".join(textwrap.wrap(b64, 76)) + "\n",
        "spaces_and_tabs": " \t".join([b64[:10], b64[10:20], b64[20:]]),
        "urlsafe": base64.urlsafe_b64encode(data).decode().rstrip("="),
        "data_url": "data:image/png;base64," + b64,
        "data_url_upper": "DATA:IMAGE/PNG;BASE64," + b64,
        "data_url_no_type": "data:;base64," + b64,
        "data_url_percent": "data:image/png;base64," + b64.replace("+", "%2B").replace("/", "%2F"),
        "surrounding_whitespace": "  " + b64 + "\n",
    }


@pytest.mark.parametrize(
    "variant",
    [
        "padded",
        "unpadded",
        "wrapped",
        "spaces_and_tabs",
        "urlsafe",
        "data_url",
        "data_url_upper",
        "data_url_no_type",
        "data_url_percent",
        "surrounding_whitespace",
    ],
)
def test_base64_variants(variant: str, png_bytes: bytes) -> None:
    text = _variants(png_bytes)[variant]
    assert read_input(text, SETTINGS) == png_bytes
    assert read_input({"data": text}, SETTINGS) == png_bytes
    decoded = load_image(text, SETTINGS)
    assert decoded.image.size == (7, 5)
    assert decoded.sha256 == hashlib.sha256(png_bytes).hexdigest()


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("!!!!", "invalid_base64"),
        ("abcde", "invalid_base64"),
        ("=abc", "invalid_base64"),
        ("ab=cd", "invalid_base64"),
        ("iVBORw0KGgo\u00e9", "invalid_base64"),
        ("data:image/png,rawdata", "invalid_base64"),
        ("data:image/png;base64", "invalid_base64"),
        ("data:image/png;base64,!!!!", "invalid_base64"),
        ("data:text/plain;base64,aGVsbG8=", "unsupported_format"),
        ("data:image/png;base64,", "empty"),
        ("", "empty"),
        ("   \n", "empty"),
        ("====", "empty"),
    ],
)
def test_bad_strings_are_refused(text: str, code: str) -> None:
    with pytest.raises(ImageRejectedError) as caught:
        read_input(text, SETTINGS)
    assert caught.value.code == code


def test_svg_data_url_is_refused_by_magic() -> None:
    svg = base64.b64encode(corpus.FOREIGN_HEADERS["svg"]).decode()
    with pytest.raises(ImageRejectedError) as caught:
        load_image("data:image/svg+xml;base64," + svg, SETTINGS)
    assert caught.value.code == "unsupported_format"


def test_base64_cap_is_checked_on_the_encoded_length(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(binascii, "a2b_base64", lambda *a, **k: pytest.fail("decoded anyway"))
    settings = ImageInputSettings(max_bytes=1000)
    for text in (base64.b64encode(b"\x00" * 1001).decode(), "A" * 10_000_000):
        with pytest.raises(ImageRejectedError) as caught:
            read_input(text, settings)
        assert caught.value.code == "too_large"
        assert "the limit is 1 kB" in caught.value.message


def test_base64_exactly_at_the_cap_is_accepted() -> None:
    text = base64.b64encode(b"\x01" * 1000).decode()
    assert len(read_input(text, ImageInputSettings(max_bytes=1000))) == 1000


def test_raw_bytes(png_bytes: bytes) -> None:
    assert read_input(png_bytes, SETTINGS) is png_bytes
    assert read_input({"data": png_bytes}, SETTINGS) is png_bytes
    with pytest.raises(ImageRejectedError) as caught:
        read_input(b"x" * 1001, ImageInputSettings(max_bytes=1000))
    assert caught.value.code == "too_large"


def test_data_url_in_the_url_field(png_bytes: bytes) -> None:
    url = "data:image/png;base64," + base64.b64encode(png_bytes).decode()
    assert read_input({"url": url}, SETTINGS) == png_bytes


@pytest.mark.parametrize(
    "item",
    [
        {},
        {"data": "AAAA", "url": "http://x/"},
        {"data": "AAAA", "path": "a.png"},
        {"data": 123},
        {"path": b"/etc/passwd"},
        {"url": None},
        42,
        None,
        ["AAAA"],
    ],
)
def test_malformed_items(item: Any) -> None:
    with pytest.raises(ImageRejectedError) as caught:
        read_input(item, SETTINGS)
    assert caught.value.code == "invalid_input"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("/etc/passwd", "unsupported_format"),  # valid base64 of bytes that are no image
        ("../../etc/shadow", "invalid_base64"),
        ("C:\\Windows\\win.ini", "forbidden_url"),  # read as a URL of scheme c:
    ],
)
def test_strings_are_never_paths(text: str, code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "open", lambda *a, **k: pytest.fail("opened a file"))
    with pytest.raises(ImageRejectedError) as caught:
        load_image(text, SETTINGS)
    assert caught.value.code == code


# --- Settings ---------------------------------------------------------------------------------


def test_settings_from_env() -> None:
    settings = ImageInputSettings.from_env(
        {
            "VIZDEX_MAX_IMAGE_BYTES": "1_000",
            "VIZDEX_MAX_IMAGE_PIXELS": "2000",
            "VIZDEX_ALLOWED_ROOTS": "/data/a, /data/b",
            "VIZDEX_ALLOW_URLS": "yes",
            "VIZDEX_URL_TIMEOUT": "2.5",
            "VIZDEX_URL_MAX_REDIRECTS": "1",
            "VIZDEX_URL_ALLOWED_NETWORKS": "10.1.0.0/16,fd00::/8",
        }
    )
    assert settings == ImageInputSettings(
        max_bytes=1000,
        max_pixels=2000,
        allowed_roots=("/data/a", "/data/b"),
        allow_urls=True,
        url_timeout_s=2.5,
        max_redirects=1,
        allowed_networks=("10.1.0.0/16", "fd00::/8"),
    )
    assert ImageInputSettings.from_env({}) == ImageInputSettings()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"allowed_networks": ("not-a-cidr",)},
        {"allowed_roots": ("relative/root",)},
        {"max_pixels": 0},
        {"max_pixels": 10**9},
        {"max_bytes": 0},
        {"url_timeout_s": 0.0},
        {"max_redirects": -1},
    ],
)
def test_bad_settings_fail_at_start(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        ImageInputSettings(**kwargs)


def test_defaults_are_the_safe_ones() -> None:
    assert SETTINGS.allowed_roots == ()
    assert SETTINGS.allow_urls is False
    assert (SETTINGS.max_bytes, SETTINGS.max_pixels) == (50_000_000, 50_000_000)
