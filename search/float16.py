"""Vectors stored in float16: half the bytes of float32, for the catalog and the vector files.

float16 keeps about 3.3 significant digits: a unit vector's cosine with its float16 copy is
1 - O(1e-7), far below what separates neighbours. Its squared norm, though, moves by about 1e-5,
which matters where vizdex compares a vector with itself (a byte-identical duplicate must score 1
within ``RANGE_SLACK``). So a vector that was unit length when stored comes back unit length.
"""

from __future__ import annotations

import numpy as np

MAX = float(np.finfo(np.float16).max)  # 65504: larger magnitudes are refused on write
# A stored unit vector's norm is within ~1e-4 of 1; anything further was not unit length.
UNIT_TOLERANCE = 1e-2


def to_float16(vectors: np.ndarray) -> np.ndarray:
    """Little-endian float16 rows; values beyond its range saturate (callers refuse them first
    where the input comes from outside)."""
    return np.clip(np.asarray(vectors, dtype=np.float32), -MAX, MAX).astype("<f2")


def from_float16(rows: np.ndarray) -> np.ndarray:
    """float32 rows from float16 ones, unit-length rows renormalised (see the module doc)."""
    out = np.array(rows, dtype=np.float32, order="C")  # a copy: scaled in place below
    if out.ndim != 2 or out.size == 0:
        return out
    # Divided in place, unit rows only: re-ranking converts ~100-400 rows per query, and
    # whole-matrix temporaries (a divided copy, then np.where) cost more than the conversion.
    # linalg.norm sums pairwise: einsum's running float32 sum left a 4096-d row's dot with
    # itself 1.5e-6 short of 1, beyond RANGE_SLACK.
    norms = np.linalg.norm(out, axis=1)
    unit = (np.abs(norms - 1.0) < UNIT_TOLERANCE)[:, None]
    np.divide(out, norms[:, None], out=out, where=unit)
    return out
