"""How a model scores near-copies against distinct photos: the measurement behind a threshold.

For ``--photos`` synthetic photos (``tests/support/synthetic_photos``), each edit of the near-copy
set (``tests/support/near_copies``: re-saved at JPEG quality 60 and 35, halved, cropped by 10 %,
brightened, mirrored) is scored against its original, and every pair of distinct originals
against each other. A threshold groups an edit's copies when it is below the edit's scores, and
keeps distinct photos apart when it is above theirs. Without ``--model`` the tiny random test
checkpoints are made and measured (what the test suite sees); pass real checkpoints to choose a
threshold for them.

    python -m benchmarks.duplicate_threshold
    python -m benchmarks.duplicate_threshold --model /models/dinov3-vits16 --photos 200
"""

from __future__ import annotations

import argparse
import io
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support.near_copies import EDITS, SIZE, edit
from tests.support.synthetic_photos import make_photo
from vizdex.encoders.loading import load_encoder
from vizdex.encoders.settings import EncoderSettings


def _decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def measure(model: str, photos: int, seed: int) -> None:
    encoder = load_encoder(model, EncoderSettings(models=(model,), device="cpu", batch_size=16))
    originals = [make_photo(*SIZE, seed=seed + index) for index in range(photos)]
    base = encoder.encode_images([_decoded(edit(photo, "original")) for photo in originals])
    print(f"{model} ({encoder.dim} dimensions), {photos} photos")
    print(f"  {'copy':<14} {'min':>6} {'p5':>6} {'mean':>6}")
    for name in EDITS[1:]:
        copies = encoder.encode_images([_decoded(edit(photo, name)) for photo in originals])
        scores = np.sum(base * copies, axis=1)
        print(
            f"  {name:<14} {scores.min():>6.3f} {np.percentile(scores, 5):>6.3f} "
            f"{scores.mean():>6.3f}"
        )
    pairs = (base @ base.T)[np.triu_indices(photos, 1)]
    print(
        f"  {'distinct':<14} mean {pairs.mean():.3f}, p95 {np.percentile(pairs, 95):.3f}, "
        f"p99 {np.percentile(pairs, 99):.3f}, max {pairs.max():.3f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", action="append", help="checkpoint dir or hub id; repeat")
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--seed", type=int, default=900)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vizdex-threshold-") as folder:
        models = args.model
        if not models:
            from tests.support.tiny_models import make_tiny_clip, make_tiny_dinov3

            models = [
                str(make_tiny_dinov3(Path(folder) / "tiny-dinov3")),
                str(make_tiny_clip(Path(folder) / "tiny-clip")),
            ]
        for model in models:
            measure(model, args.photos, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
