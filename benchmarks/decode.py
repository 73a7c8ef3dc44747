"""Decode speed of the image door vs plain PIL on the same JPEG bytes, in the same run.

Plain PIL: ``Image.open(BytesIO(data)).convert("RGB")``. The door: ``decode_image_bytes`` (magic
check, caps, sha256, format-restricted open, EXIF orientation, RGB). Also the draft-mode speed-up
(JPEG DCT scaling) with ``min_side``, and what the device path (nvJPEG) costs the CPU per JPEG:
the header and marker check alone, and with the strict data check at 1/8 scale that refuses
damaged files as the door does (``VIZDEX_DEVICE_DECODE_CHECK``). Each image is timed
``--rounds`` times per decoder, decoders taking turns; the per-image best times are summed into
images/s.

    python -m benchmarks.decode
    python -m benchmarks.decode --photos 10 --small 50 --rounds 2   # quicker
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from vizdex.imaging import ImageInputSettings, decode_image_bytes, read_header

DOOR = ImageInputSettings()


def make_jpegs(width: int, height: int, count: int, quality: int = 90) -> list[bytes]:
    """Gradients plus sensor-like noise; one noise field, shifted per image (fast to make)."""
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 8, size=(height, width, 3)).astype(np.float32)
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    jpegs = []
    for index in range(count):
        tint = rng.uniform(0, 255, size=3).astype(np.float32)
        gradient = 60 + 120 * (ys * tint / 255 + xs * (1 - tint / 255))
        shifted = np.roll(noise, shift=(index * 37, index * 53), axis=(0, 1))
        pixels = np.clip(gradient + shifted, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
        jpegs.append(buffer.getvalue())
    return jpegs


def plain_pil(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def door(data: bytes) -> Image.Image:
    return decode_image_bytes(data, DOOR).image


def door_draft(min_side: int) -> Callable[[bytes], Image.Image]:
    def decode(data: bytes) -> Image.Image:
        return decode_image_bytes(data, DOOR, min_side=min_side).image

    return decode


def device_header(data: bytes) -> None:
    read_header(data, "JPEG", DOOR)


def device_checked(data: bytes) -> None:
    read_header(data, "JPEG", DOOR, check_data=True)


def best_rate(
    jpegs: list[bytes], decoders: dict[str, Callable[[bytes], object]], rounds: int
) -> dict[str, float]:
    """Images/s per decoder from the best time of each image over ``rounds``.

    Decoders take turns image by image (rotating who goes first), so a burst of load from other
    processes hits them alike; the per-image minimum discards the bursts.
    """
    names = list(decoders)
    best = {name: [float("inf")] * len(jpegs) for name in names}
    for round_index in range(rounds):
        for index, data in enumerate(jpegs):
            shift = (round_index + index) % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                decoders[name](data)
                elapsed = time.perf_counter() - started
                best[name][index] = min(best[name][index], elapsed)
    return {name: len(jpegs) / sum(times) for name, times in best.items()}


def report(title: str, jpegs: list[bytes], rounds: int, min_side: int) -> None:
    size = Image.open(io.BytesIO(jpegs[0])).size
    mean_mb = sum(map(len, jpegs)) / len(jpegs) / 1e6
    print(f"\n{title}: {len(jpegs)} JPEGs of {size[0]}x{size[1]}, mean {mean_mb:.2f} MB")
    rates = best_rate(
        jpegs,
        {
            "plain PIL": plain_pil,
            "door": door,
            f"door min_side={min_side}": door_draft(min_side),
            "device: header only": device_header,
            "device: data checked": device_checked,
        },
        rounds,
    )
    for name, value in rates.items():
        print(f"  {name:<22} {value:8.1f} img/s")
    print(f"  door / plain PIL       {rates['door'] / rates['plain PIL']:8.3f}")
    drafted = rates[f"door min_side={min_side}"]
    print(f"  draft speed-up         {drafted / rates['door']:8.2f}x vs full door decode")
    # Time per image relative to a full door decode (rates are images/s, so invert).
    checked = rates["door"] / rates["device: data checked"]
    print(f"  device check / door    {checked:8.3f} (CPU time per JPEG, data checked)")
    header = rates["door"] / rates["device: header only"]
    print(f"  header only / door     {header:8.3f} (CPU time per JPEG, markers only)")
    decoded = decode_image_bytes(jpegs[0], DOOR, min_side=min_side).image.size
    print(f"  draft decoded size     {decoded[0]}x{decoded[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--photos", type=int, default=40, help="number of 12 MP (4000x3000) JPEGs")
    parser.add_argument("--small", type=int, default=200, help="number of 640x480 JPEGs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-side", type=int, default=448)
    args = parser.parse_args()
    if args.photos:
        report("12 MP photos", make_jpegs(4000, 3000, args.photos), args.rounds, args.min_side)
    if args.small:
        report("640x480 photos", make_jpegs(640, 480, args.small), args.rounds, args.min_side)


if __name__ == "__main__":
    main()
