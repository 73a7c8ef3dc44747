"""Shared benchmark helpers: cached synthetic photo sets and timing."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tests.support.synthetic_photos import jpeg_bytes, make_photo
from vizdex.encoders.settings import DTYPES

CACHE = Path(__file__).parent / ".cache"


def _write_photo(path: Path, width: int, height: int, seed: int) -> None:
    partial = path.with_suffix(".tmp")
    partial.write_bytes(jpeg_bytes(make_photo(width, height, seed=seed)))
    partial.replace(path)


def photo_set(width: int, height: int, count: int, cache: Path = CACHE) -> list[Path]:
    """``count`` JPEG photos of ``width``x``height``, generated once and reused across runs.

    Missing ones are made in worker processes (a 12 MP photo takes about a second of one core,
    and a GPU benchmark wants thousands of them).
    """
    folder = cache / f"photos-{width}x{height}"
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"{index:05d}.jpg" for index in range(count)]
    missing = [(path, index) for index, path in enumerate(files) if not path.exists()]
    if len(missing) > 1:
        with ProcessPoolExecutor(max_workers=min(len(missing), os.cpu_count() or 1)) as pool:
            jobs = [pool.submit(_write_photo, path, width, height, seed) for path, seed in missing]
            for job in jobs:
                job.result()
    elif missing:
        _write_photo(missing[0][0], width, height, missing[0][1])
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


def add_dtype_option(parser: argparse.ArgumentParser) -> None:
    """``--dtype a,b,...``: our side in each of these VIZDEX_DTYPE values, against one baseline."""

    def dtypes(value: str) -> list[str]:
        chosen = [part.strip() for part in value.split(",") if part.strip()]
        unknown = [part for part in chosen if part not in DTYPES]
        if not chosen or unknown:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(DTYPES)}, comma-separated")
        return chosen

    parser.add_argument(
        "--dtype",
        type=dtypes,
        default=["auto"],
        help=f"VIZDEX_DTYPE of our side, comma-separated ({', '.join(DTYPES)}; default auto)",
    )
