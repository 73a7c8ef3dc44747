"""Images that would blow up memory or that are damaged are refused at the door, with a code.

Found by an adversarial run: a 97 KB 1×50,000,000 PNG made the resize ask for 614 GB; a JPEG cut
in half with an end marker appended, or whose header claims more pixels than its data holds, was
indexed with a grey fill. Extreme aspect ratios are refused from the header, before any pixel is
decoded; JPEG damage is refused by the strict decode and, for decoders elsewhere (nvJPEG), by
the structural check.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.decode_work import counting_decodes
from tests.support.image_corpus import (
    encode,
    photo_like,
    png_from_scanlines,
    png_of_size,
    png_scanlines,
)
from vizdex.core.errors import ImageRejectedError
from vizdex.imaging import ImageInputSettings, decode_image_bytes, load_image, read_header
from vizdex.imaging.budget import PixelBudget
from vizdex.imaging.jpeg import check_structure

SETTINGS = ImageInputSettings()


def photo(width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], -1)
    return np.clip(base + rng.integers(-30, 30, base.shape), 0, 255).astype(np.uint8)


def jpeg(pixels: np.ndarray, mode: str = "RGB", **options: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, "JPEG", quality=90, **options)
    return out.getvalue()


def refusal(data: bytes, **kwargs: object) -> ImageRejectedError:
    with pytest.raises(ImageRejectedError) as caught:
        decode_image_bytes(data, SETTINGS, **kwargs)  # type: ignore[arg-type]
    return caught.value


# -- aspect ratio ----------------------------------------------------------------------------


def test_the_97_kb_needle_is_refused_before_decoding() -> None:
    data = png_of_size(1, 50_000_000)
    assert len(data) < 100_000
    error = refusal(data)
    assert error.code == "extreme_aspect_ratio"
    assert "1×50,000,000" in error.message and "100 times" in error.message
    with pytest.raises(ImageRejectedError, match="too elongated"):
        read_header(data, "PNG", SETTINGS)


@pytest.mark.parametrize(("width", "height"), [(60_000, 1), (1, 60_000), (10_100, 100)])
def test_either_orientation_beyond_the_limit_is_refused(width: int, height: int) -> None:
    assert refusal(png_of_size(width, height)).code == "extreme_aspect_ratio"


@pytest.mark.parametrize(("width", "height"), [(100, 1), (1, 100), (10_000, 100), (64, 48)])
def test_ratios_up_to_the_limit_decode(width: int, height: int) -> None:
    decoded = load_image(png_of_size(width, height), SETTINGS)
    assert (decoded.width, decoded.height) == (width, height)


def test_the_limit_is_a_setting() -> None:
    strict = ImageInputSettings(max_aspect_ratio=2)
    with pytest.raises(ImageRejectedError, match="more than 2 times"):
        load_image(png_of_size(30, 10), strict)
    assert load_image(png_of_size(20, 10), strict).width == 20
    assert ImageInputSettings.from_env({"VIZDEX_MAX_ASPECT_RATIO": "3.5"}).max_aspect_ratio == 3.5


# Peak RSS is read from /proc after resetting it: getrusage's ru_maxrss survives exec, so a
# child of a large pytest process starts at the parent's size and would always report 0 MB.
PEAK_RSS = textwrap.dedent(
    """
    import sys
    from vizdex.imaging import ImageInputSettings, load_image
    from vizdex.encoders.preprocess import PreprocessSpec, preprocess_images
    from torchvision.transforms import InterpolationMode

    def kb(field):
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field))

    data = open(sys.argv[1], "rb").read()
    spec = PreprocessSpec(
        interpolation=InterpolationMode.BICUBIC, shortest_edge=224, crop_hw=(224, 224),
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    )
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # the peak (VmHWM) starts again from the current size
    before = kb("VmRSS:")
    try:
        pixels = preprocess_images([load_image(data, ImageInputSettings()).image], spec)
        outcome = "x".join(str(side) for side in pixels.shape)
    except Exception as error:
        outcome = getattr(error, "code", type(error).__name__)
    print(outcome, (kb("VmHWM:") - before) // 1024)
    """
)


@pytest.mark.parametrize(
    ("width", "height", "outcome", "most_mb"),
    [
        (1, 60_000, "extreme_aspect_ratio", 16),  # was ~1 GB: refused from the header
        (1, 50_000_000, "extreme_aspect_ratio", 16),  # was a 614 GB allocation
        (300, 30_000, "1x3x224x224", 400),  # the widest accepted: decoded, resized, cropped
    ],
)
def test_peak_memory_per_image_is_bounded(
    tmp_path: pytest.TempPathFactory, width: int, height: int, outcome: str, most_mb: int
) -> None:
    """Peak RSS growth of the door plus model preprocessing, in a fresh process."""
    image = tmp_path / "image.png"  # type: ignore[operator]
    image.write_bytes(png_of_size(width, height))
    run = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, str(image)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    seen, grown_mb = run.stdout.split()
    assert seen == outcome
    assert int(grown_mb) <= most_mb, f"peak RSS grew by {grown_mb} MB"


def _peak_mb(path: Path) -> int:
    run = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, str(path)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    outcome, grown_mb = run.stdout.split()
    assert outcome == "1x3x224x224"
    return int(grown_mb)


def test_no_colour_mode_costs_much_more_memory_than_rgb(tmp_path: Path) -> None:
    """Found by the second adversarial run: a float TIFF at the pixel cap took ~1 GB to decode,
    twice an RGB image of its size (each NumPy expression of the 8-bit conversion made another
    full-size temporary); RGBA paid for a copy of itself. Compared with RGB in the same run."""
    rng = np.random.default_rng(0)
    side = 3000
    images = {
        "rgb": (Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)), "PNG"),
        "float": (Image.fromarray(rng.random((side, side), dtype=np.float32) * 3), "TIFF"),
        "16-bit": (Image.fromarray(rng.integers(0, 65535, (side, side), dtype=np.uint16)), "PNG"),
        "rgba": (Image.fromarray(rng.integers(0, 255, (side, side, 4), dtype=np.uint8)), "TIFF"),
    }
    peaks = {}
    for name, (image, fmt) in images.items():
        path = tmp_path / name
        path.write_bytes(
            encode(image, fmt, compress_level=1) if fmt == "PNG" else encode(image, fmt)
        )
        peaks[name] = _peak_mb(path)
    assert max(peaks.values()) <= 1.5 * peaks["rgb"], peaks


# -- damaged JPEGs ---------------------------------------------------------------------------


def test_a_baseline_jpeg_cut_in_half_with_an_end_marker_is_refused() -> None:
    data = jpeg(photo())
    cut = data[: len(data) // 2] + b"\xff\xd9"
    error = refusal(cut)
    assert error.code == "corrupt"
    assert "premature end" in error.message
    assert refusal(cut, min_side=64).code == "corrupt"  # draft decoding too


def test_a_header_that_claims_more_pixels_than_the_data_holds_is_refused() -> None:
    data = bytearray(jpeg(photo(64, 48)))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (7000).to_bytes(2, "big") * 2
    assert refusal(bytes(data)).code == "corrupt"
    with pytest.raises(ImageRejectedError, match="need more data than the file holds"):
        read_header(bytes(data), "JPEG", SETTINGS)  # the device path's check


def test_missing_restart_intervals_are_found_without_decoding() -> None:
    data = jpeg(photo(), restart_marker_blocks=4)
    check_structure(data)
    scan = data.find(b"\xff\xda")
    cut = data[: scan + (len(data) - scan) // 2] + b"\xff\xd9"
    with pytest.raises(ImageRejectedError) as caught:
        check_structure(cut)
    assert caught.value.code == "corrupt"


@pytest.mark.parametrize(
    ("mode", "options"),
    [
        ("RGB", {}),
        ("RGB", {"subsampling": 0}),
        ("RGB", {"subsampling": 1}),
        ("RGB", {"progressive": True}),
        ("L", {}),
        ("CMYK", {}),
    ],
    ids=["420", "444", "422", "progressive", "grey", "cmyk"],
)
@pytest.mark.parametrize("min_side", [None, 32, 64, 150, 500])  # draft scales 1, 8, 4, 2, 1
def test_whole_jpegs_decode_exactly_as_pillow_does(
    mode: str, options: dict[str, object], min_side: int | None
) -> None:
    data = jpeg(photo(637, 451, seed=3), mode, **options)
    check_structure(data)
    with counting_decodes() as work:
        ours = decode_image_bytes(data, SETTINGS, min_side=min_side).image
    # Once, at Pillow's draft scale; a CMYK file is checked by libjpeg-turbo, decoded by Pillow.
    assert work.decoders == (2 if mode == "CMYK" else 1)
    with Image.open(io.BytesIO(data)) as reference:
        if min_side is not None:
            reference.draft("RGB", (min_side, min_side))
        reference.load()
        expected = reference.convert("RGB")
    assert ours.mode == "RGB" and ours.size == expected.size
    assert np.array_equal(np.asarray(ours), np.asarray(expected))


def test_harmless_warnings_do_not_refuse_a_whole_jpeg() -> None:
    """Extraneous bytes before the end marker are common in camera files: decoded as Pillow."""
    data = jpeg(photo(96, 64))
    padded = data[:-2] + b"\x00\x00\x00" + data[-2:]
    ours = decode_image_bytes(padded, SETTINGS).image
    assert np.array_equal(np.asarray(ours), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def _cut_before_scan(data: bytes, scan: int) -> bytes:
    """``data`` up to its ``scan``-th (0-based) start of scan, then an end marker."""
    starts = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xda"]
    return data[: starts[scan]] + b"\xff\xd9"


@pytest.mark.parametrize("kept", [1, 2, 5])
def test_a_progressive_jpeg_cut_after_its_first_scans_is_refused(kept: int) -> None:
    """Found by the adversarial run after the first fix: it decoded blurred, with no warning."""
    data = jpeg(photo(), progressive=True)
    cut = _cut_before_scan(data, kept)
    assert refusal(cut).code == "corrupt"
    with pytest.raises(ImageRejectedError, match="ends before its last scan"):
        read_header(cut, "JPEG", SETTINGS)  # the device path's check sees it too


def test_a_frame_whose_scans_miss_a_component_is_refused() -> None:
    """A sequential file whose only scan covers luminance: the colour would be filled grey."""
    data = bytearray(jpeg(photo()))
    sos = data.find(b"\xff\xda")
    count = data[sos + 4]
    assert count == 3
    # Keep the first component of the scan header only (its selector bytes stay the same).
    header = data[sos + 5 : sos + 5 + 2 * count + 3]
    shorter = bytes([1]) + bytes(header[:2]) + bytes(header[2 * count :])
    length = 2 + len(shorter)
    patched = bytes(data[: sos + 2]) + length.to_bytes(2, "big") + shorter
    patched += bytes(data[sos + 5 + 2 * count + 3 :])
    with pytest.raises(ImageRejectedError, match="ends before its last scan"):
        check_structure(patched)


@pytest.mark.parametrize("marker", [b"\xff\xdb", b"\xff\xc0", b"\xff\xc4", b"\xff\xda"])
def test_stray_bytes_before_a_header_marker_are_harmless(marker: bytes) -> None:
    """libjpeg-turbo refuses these in the header even when not strict; Pillow decodes them."""
    data = jpeg(photo(96, 64))
    at = data.index(marker)
    padded = data[:at] + b"\x00\x00" + data[at:]
    ours = decode_image_bytes(padded, SETTINGS).image
    assert np.array_equal(np.asarray(ours), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


# -- other formats whose data ends before the header's last row ------------------------------
# Found by the second adversarial run: Pillow decodes these with the missing rows black.


def _png_cases() -> list[tuple[int, int, bool]]:
    sizes = [(1, 1), (1, 9), (9, 1), (5, 3), (17, 11)]
    return [(w, h, interlaced) for w, h in sizes for interlaced in (False, True)]


@pytest.mark.parametrize(("width", "height", "interlaced"), _png_cases())
def test_a_png_whose_data_ends_before_its_last_row_is_refused(
    width: int, height: int, interlaced: bool
) -> None:
    """Every cut of the image data, each a complete zlib stream (the file ends properly)."""
    pixels = np.asarray(photo_like(width, height, seed=width * height))
    scanlines = png_scanlines(pixels, interlaced=interlaced)
    whole = png_from_scanlines(width, height, scanlines, interlaced=interlaced)
    assert np.array_equal(np.asarray(load_image(whole, SETTINGS).image), pixels)
    for keep in range(len(scanlines)):
        short = png_from_scanlines(width, height, scanlines[:keep], interlaced=interlaced)
        assert refusal(short).code == "corrupt", keep


def test_a_tiny_png_claiming_a_large_image_is_refused() -> None:
    """102 bytes whose header says 7000×7000: was decoded to 147 MB of black and indexed."""
    row = np.full((1, 7000, 3), 200, dtype=np.uint8)
    data = png_from_scanlines(7000, 7000, png_scanlines(row))
    assert len(data) < 200
    error = refusal(data)
    assert error.code == "corrupt" and "7,000×7,000" in error.message


@pytest.mark.parametrize("interlaced", [False, True])
def test_whole_pngs_whose_last_row_is_black_decode(interlaced: bool) -> None:
    """A black last row looks like a missing one: the data is counted, and it is all there."""
    pixels = np.asarray(photo_like(13, 10, seed=1)).copy()
    pixels[-2:] = 0
    data = png_from_scanlines(
        13, 10, png_scanlines(pixels, interlaced=interlaced), interlaced=interlaced
    )
    assert np.array_equal(np.asarray(load_image(data, SETTINGS).image), pixels)
    black = encode(Image.new("RGB", (40, 30)), "PNG")
    assert load_image(black, SETTINGS).width == 40


def _tiff_tag(data: bytes, tag: int, value: int) -> bytes:
    """``data`` (a little-endian TIFF) with one SHORT or LONG tag of its first page set."""
    patched = bytearray(data)
    ifd = int.from_bytes(data[4:8], "little")
    for entry in range(int.from_bytes(data[ifd : ifd + 2], "little")):
        at = ifd + 2 + 12 * entry
        if int.from_bytes(data[at : at + 2], "little") == tag:
            size = 2 if int.from_bytes(data[at + 2 : at + 4], "little") == 3 else 4
            patched[at + 8 : at + 8 + size] = value.to_bytes(size, "little")
            return bytes(patched)
    raise AssertionError(f"tag {tag} not found")


def test_a_jpeg_compressed_tiff_with_a_short_strip_is_refused() -> None:
    data = encode(photo_like(256, 96, seed=2), "TIFF", compression="jpeg")
    assert load_image(data, SETTINGS).height == 96
    with Image.open(io.BytesIO(data)) as opened:
        tags = opened.tag_v2  # type: ignore[attr-defined]  # a TiffImageFile
        assert (tags[278], len(tags[273])) == (88, 2)  # strips of 88 and 8 rows
        offset, count = tags[273][-1], tags[279][-1]
    # The last strip's JPEG stream stops halfway, with an end marker: libtiff fills it black.
    cut = bytearray(data)
    half = offset + count // 2
    cut[half : offset + count] = b"\xff\xd9" + bytes(offset + count - half - 2)
    error = refusal(bytes(cut))
    assert error.code == "corrupt" and "premature end" in error.message
    # Stopping halfway without an end marker: the structure check cannot read the stream to its
    # end, so the strict decode alone refuses it, with the decoder's reason.
    cut[half : offset + count] = bytes(offset + count - half)
    error = refusal(bytes(cut))
    assert error.code == "corrupt" and "premature end of jpeg file" in error.message.lower()
    # A page that says 128 rows: its second strip should hold 40 of them, its stream holds 8.
    error = refusal(_tiff_tag(data, 257, 128))
    assert error.code == "corrupt" and "should hold 256×40 pixels holds 256×8" in error.message


def test_arithmetic_coded_jpegs_are_refused_on_both_paths() -> None:
    """A decoder meeting a marker inside arithmetic-coded data reads zeros from there on, as the
    standard allows: a cut file decodes without a warning. Here, a bogus SOF9 over Huffman data
    decoded to noise and was indexed."""
    data = bytearray(jpeg(photo(64, 48)))
    sof = data.find(b"\xff\xc0")
    data[sof + 1] = 0xC9  # arithmetic-coded sequential
    error = refusal(bytes(data))
    assert error.code == "unsupported_format" and "arithmetic" in error.message
    with pytest.raises(ImageRejectedError, match="arithmetic"):
        read_header(bytes(data), "JPEG", SETTINGS)  # the device path's check


@pytest.mark.parametrize("where", [0.25, 0.5, 0.75])
def test_a_png_whose_compressed_data_is_damaged_is_refused(where: float) -> None:
    """Bytes flipped inside IDAT: Pillow's load() fails. Reading EXIF first used to load the
    pixels inside a forgiving metadata read, so the failure was swallowed and the half-decoded
    image indexed."""
    pixels = photo(256, 256, seed=3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    start = data.find(b"IDAT") + 4
    length = int.from_bytes(data[start - 8 : start - 4], "big")
    middle = start + int(length * where)
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    assert refusal(bytes(data)).code == "corrupt"


def test_a_png_keeps_its_exif_orientation() -> None:
    """The orientation is still read (now after the pixels) and applied."""
    pixels = photo(64, 32, seed=4)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", exif=exif)
    decoded = decode_image_bytes(buffer.getvalue(), SETTINGS)
    assert (decoded.width, decoded.height) == (32, 64)
    assert np.array_equal(np.asarray(decoded.image), np.rot90(pixels, k=-1))


CONCURRENT_PEAK = textwrap.dedent(
    """
    import sys, threading
    from vizdex.imaging import ImageInputSettings, load_image

    def kb(field):
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field))

    data = open(sys.argv[1], "rb").read()
    threads, budget = int(sys.argv[2]), int(sys.argv[3])
    settings = ImageInputSettings(decode_budget_pixels=budget)
    start = threading.Barrier(threads)

    def decode():
        start.wait()
        load_image(data, settings).image.close()

    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    before = kb("VmRSS:")
    workers = [threading.Thread(target=decode) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print((kb("VmHWM:") - before) // 1024)
    """
)


def _concurrent_peak_mb(path: Path, threads: int, budget: int) -> int:
    run = subprocess.run(
        [sys.executable, "-c", CONCURRENT_PEAK, str(path), str(threads), str(budget)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return int(run.stdout)


def test_concurrent_decodes_share_one_pixel_budget(tmp_path: Path) -> None:
    """Four requests each sending a few-KB PNG near the cap peaked at four times one decode's
    memory (an adversarial run: +1.9 GB). With a budget of one such image they queue: the
    peak stays near one decode's. The control, a budget for all four, shows the bound can fail."""
    width, height = 20_000, 400  # 8 MP, a few KB as a PNG
    image = tmp_path / "wide.png"
    image.write_bytes(png_of_size(width, height))
    assert image.stat().st_size < 100_000
    one = _concurrent_peak_mb(image, 1, width * height)
    queued = _concurrent_peak_mb(image, 4, width * height)
    assert one > 20, one  # the decode costs something to bound
    assert queued <= 1.6 * one + 8, (one, queued)
    # The control needs the four decodes to overlap, which a loaded machine's scheduler may not
    # grant on a given run (CI under load once saw 86 MB against 39): the bound is shown to be
    # breakable when any of three runs breaks it.
    unbounded = []
    for _ in range(3):
        unbounded.append(_concurrent_peak_mb(image, 4, 4 * width * height))
        if unbounded[-1] >= 2.5 * one:
            break
    assert max(unbounded) >= 2.5 * one, (one, unbounded)


def test_the_pixel_budget_admits_what_fits_and_an_oversized_image_alone() -> None:
    budget = PixelBudget()
    entered = threading.Event()
    release = threading.Event()

    def big() -> None:
        with budget.hold(150, limit=100):  # larger than the budget: runs alone
            entered.set()
            release.wait(30)

    holder = threading.Thread(target=big)
    holder.start()
    assert entered.wait(30) and budget.held == 100
    waited = threading.Event()

    def small() -> None:
        with budget.hold(10, limit=100):
            waited.set()

    second = threading.Thread(target=small)
    second.start()
    assert not waited.wait(0.2)  # the whole budget is held: it waits (not a timing bound)
    release.set()
    holder.join(30)
    second.join(30)
    assert waited.is_set() and budget.held == 0 and budget.peak == 100
    with budget.hold(40, limit=100), budget.hold(60, limit=100):  # what fits goes together
        assert budget.held == 100


# -- the device path refuses what the CPU path refuses ---------------------------------------
# nvJPEG decodes the pixels there; the markers alone pass most files cut inside a scan with an
# end marker appended, and what the device decoder makes of those (grey, an error) is not
# something to rely on. ``check_data`` reads the data strictly before the device sees it.

_CUT_SOURCES: dict[str, tuple[str, dict[str, object]]] = {
    "420": ("RGB", {}),
    "444": ("RGB", {"subsampling": 0}),
    "422": ("RGB", {"subsampling": 1}),
    "grey": ("L", {}),
    "cmyk": ("CMYK", {}),
    "restart": ("RGB", {"restart_marker_blocks": 4}),
    "progressive": ("RGB", {"progressive": True}),
    "optimized": ("RGB", {"optimize": True}),
}


def _outcome(run: Callable[[bytes], object], data: bytes) -> str:
    try:
        run(data)
    except ImageRejectedError as error:
        return error.code
    return "accepted"


def _device_check(data: bytes) -> None:
    read_header(data, "JPEG", SETTINGS, check_data=True)


def _cuts_inside_the_scans(data: bytes, count: int) -> list[bytes]:
    """``data`` cut at ``count`` places after its first scan header, each with an end marker."""
    first_scan = data.find(b"\xff\xda")
    end = len(data) - 2
    places = np.linspace(first_scan + 20, end - 1, count).astype(int)
    return [data[:at] + b"\xff\xd9" for at in sorted(set(places))]


@pytest.mark.parametrize("kind", sorted(_CUT_SOURCES))
def test_the_device_check_refuses_every_cut_the_cpu_path_refuses(kind: str) -> None:
    mode, options = _CUT_SOURCES[kind]
    data = jpeg(photo(203, 157, seed=5), mode, **options)
    assert _outcome(_device_check, data) == "accepted"
    markers_alone = 0
    for cut in _cuts_inside_the_scans(data, 40):
        cpu = _outcome(lambda d: decode_image_bytes(d, SETTINGS), cut)
        assert cpu == "corrupt", cut.hex()[-40:]
        assert _outcome(_device_check, cut) == cpu
        markers_alone += _outcome(lambda d: read_header(d, "JPEG", SETTINGS), cut) == "accepted"
    # Without the data check most of these reached the device decoder; with restart markers
    # the markers alone show nearly every cut (their count falls short).
    assert markers_alone >= (1 if kind == "restart" else 10), markers_alone


@pytest.mark.parametrize("kind", sorted(_CUT_SOURCES))
def test_whole_and_harmlessly_padded_jpegs_pass_the_device_check(kind: str) -> None:
    """The check refuses only what the CPU path refuses: stray bytes before a marker stay fine."""
    mode, options = _CUT_SOURCES[kind]
    data = jpeg(photo(96, 64, seed=2), mode, **options)
    before_end = data[:-2] + b"\x00\x00\x00" + data[-2:]
    at = data.index(b"\xff\xdb")
    before_table = data[:at] + b"\x00\x00" + data[at:]
    for variant in (data, before_end, before_table):
        assert _outcome(lambda d: decode_image_bytes(d, SETTINGS), variant) == "accepted"
        assert _outcome(_device_check, variant) == "accepted"


def test_the_device_check_gives_the_cpu_paths_reason() -> None:
    data = jpeg(photo(320, 240, seed=7))
    cut = data[: len(data) * 3 // 4] + b"\xff\xd9"
    assert _outcome(lambda d: read_header(d, "JPEG", SETTINGS), cut) == "accepted"
    with pytest.raises(ImageRejectedError) as cpu:
        decode_image_bytes(cut, SETTINGS)
    with pytest.raises(ImageRejectedError) as device:
        _device_check(cut)
    assert (device.value.code, device.value.message) == (cpu.value.code, cpu.value.message)
    assert "premature end" in device.value.message
