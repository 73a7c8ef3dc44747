"""CUDA paths: half precision encoders and on-device decoding. Run only where CUDA is present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.synthetic_photos import make_photo
from vizdex.encoders.loading import load_encoder
from vizdex.encoders.settings import EncoderSettings

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

IMAGES = [make_photo(640, 480, seed=i) for i in range(6)]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("which", ["tiny_clip_dir", "tiny_dino_dir"])
def test_half_precision_matches_cpu(which: str, dtype: str, request: pytest.FixtureRequest) -> None:
    directory: Path = request.getfixturevalue(which)
    cpu = load_encoder(str(directory), EncoderSettings(models=(str(directory),), device="cpu"))
    gpu = load_encoder(
        str(directory), EncoderSettings(models=(str(directory),), device="cuda", dtype=dtype)
    )
    assert gpu.device.type == "cuda" and str(gpu.dtype) == f"torch.{dtype}"
    a, b = cpu.encode_images(IMAGES), gpu.encode_images(IMAGES)
    assert b.dtype == np.float32
    assert np.sum(a * b, axis=1).min() >= 0.99


def test_auto_picks_cuda_float16(tiny_clip_dir: Path) -> None:
    encoder = load_encoder(str(tiny_clip_dir), EncoderSettings(models=(str(tiny_clip_dir),)))
    assert encoder.device.type == "cuda" and encoder.dtype == torch.float16
    assert encoder.encode_texts(["a red bicycle"]).shape == (1, encoder.dim)
