"""Photo-like synthetic images: smooth gradients, shapes and mild noise (not white noise).

Noise images would make every resize path look different; real photos are mostly smooth, and so
are these, which keeps parity checks meaningful.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw


def make_photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Drawn at a quarter of the size and upscaled (fast), then given fine grain like a sensor's."""
    rng = np.random.default_rng(seed)
    w, h = max(1, width // 4), max(1, height // 4)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    fx, fy = rng.uniform(0.5, 3.0, size=2)
    base = np.stack(
        [
            127 + 100 * np.sin(2 * np.pi * fx * x / w + rng.uniform(0, 6)),
            127 + 100 * np.cos(2 * np.pi * fy * y / h + rng.uniform(0, 6)),
            255 * (x + y) / (w + h),
        ],
        axis=-1,
    )
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        radius = rng.uniform(0.05, 0.25) * min(w, h)
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    grain = rng.integers(-6, 7, size=(height, width, 1), dtype=np.int16)
    pixels = np.clip(np.asarray(image, dtype=np.int16) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
