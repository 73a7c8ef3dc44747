"""Shared benchmark helpers: cached synthetic photo sets and timing."""

from __future__ import annotations

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
    ordered = sorted(ratios)
    middle = len(ordered) // 2
    median = (
        ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    )
    return (
        f"{label:>15}: median x{median:.2f} over {len(ordered)} rounds "
        f"(x{ordered[0]:.2f} to x{ordered[-1]:.2f})"
    )


def rate(count: int, work: Callable[[], object]) -> float:
    """Items per second for one run of ``work`` over ``count`` items."""
    start = time.perf_counter()
    work()
    return count / (time.perf_counter() - start)
