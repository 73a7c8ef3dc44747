"""Compute precisions and which of them may share a collection; torch-free, so the catalog and the
web can name and compare precisions without loading torch.

Vectors are float32 and L2-normalised whatever the precision that computed them; a precision only
moves them a little. How little is what the parity tests guarantee against plain transformers
float32 (``PARITY_FLOOR``, tested in ``tests/unit/test_precision_parity.py``). Two precisions may
write vectors into one collection when, at those floors, their vectors of one input are still
within ``MIX_TOLERANCE`` of each other: the angles to float32 add up at worst, so the bound is
``cos(acos(floor_a) + acos(floor_b))``. bfloat16, float16 and float32 mix; int8 mixes with int8
only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from enum import StrEnum


class Precision(StrEnum):
    """The arithmetic an encoder computes in (its vectors are float32 either way)."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    INT8 = "int8"  # linear layers in int8 (dynamic activation scales), the rest float32


# Least cosine to the plain float32 model that the parity tests hold each precision to.
PARITY_FLOOR: dict[Precision, float] = {
    Precision.FLOAT32: 1.0,
    Precision.FLOAT16: 0.999,
    Precision.BFLOAT16: 0.999,
    Precision.INT8: 0.99,
}

# Vectors of one input made in two precisions must be at least this close to share a collection.
MIX_TOLERANCE = 0.995


def worst_cosine(a: Precision, b: Precision) -> float:
    """The least cosine between ``a``'s and ``b``'s vectors of one input, at the parity floors."""
    if a is b:
        return 1.0
    angle = math.acos(PARITY_FLOOR[a]) + math.acos(PARITY_FLOOR[b])
    return math.cos(min(angle, math.pi))


def can_mix(a: Precision, b: Precision) -> bool:
    return worst_cosine(a, b) >= MIX_TOLERANCE


def clashes(recorded: Iterable[str], new: Precision) -> list[str]:
    """The recorded precisions that ``new`` may not join; a name this vizdex does not know
    clashes (its vectors' distance to ours is unknown)."""
    found: list[str] = []
    for name in recorded:
        try:
            old = Precision(name)
        except ValueError:
            found.append(name)
            continue
        if not can_mix(old, new):
            found.append(name)
    return found
