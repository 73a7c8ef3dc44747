"""Shared benchmark helpers: cached synthetic photo sets and timing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from tests.synthetic_photos import jpeg_bytes, make_photo

CACHE = Path(__file__).parent / ".cache"


def photo_set(width: int, height: int, count: int, cache: Path = CACHE) -> list[Path]:
    """``count`` JPEG photos of ``width``x``height``, generated once and reused across runs."""
    folder = cache / f"photos-{width}x{height}"
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(count):
        path = folder / f"{index:05d}.jpg"
        if not path.exists():
            partial = path.with_suffix(".tmp")
            partial.write_bytes(jpeg_bytes(make_photo(width, height, seed=index)))
            partial.replace(path)
        files.append(path)
    return files


def ratio_summary(label: str, ratios: list[float]) -> str:
    """Median and range of per-round ratios: on a shared machine one round proves little."""
    return (
        f"{label:>15}: median x{statistics.median(ratios):.2f} over {len(ratios)} rounds "
        f"(x{min(ratios):.2f} to x{max(ratios):.2f})"
    )


def rate(count: int, work: Callable[[], object]) -> float:
    """Items per second for one run of ``work`` over ``count`` items."""
    start = time.perf_counter()
    work()
    return count / (time.perf_counter() - start)
