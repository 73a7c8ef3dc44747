"""bfloat16 and int8 encoders against plain transformers float32, on the tiny checkpoints.

Each precision must keep every vector within its ``PARITY_FLOOR`` cosine of the reference
(0.999 bfloat16, 0.99 int8), images and text: the same floors decide which precisions may share
a collection (``vizdex.core.precision``). Each bound comes with a control: the same model with its
linear weights rounded one step coarser than the precision under test (float8 for bfloat16,
4-bit for int8) falls below it, so the bound is tight enough to see precision being lost.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tests.support.reference_vectors import (
    cosines,
    reference_image_vectors,
    reference_text_vectors,
)
from tests.support.synthetic_photos import make_photo
from vizdex.core.precision import PARITY_FLOOR, Precision
from vizdex.encoders.base import Encoder
from vizdex.encoders.fused_clip import FirstTokenAttention, FusedQKVAttention
from vizdex.encoders.hf_encoder import HFEncoder
from vizdex.encoders.loading import load_encoder
from vizdex.encoders.settings import EncoderSettings

PRECISIONS = ("bfloat16", "int8")
IMAGES = [make_photo(320 + 48 * i, 240 + 20 * i, seed=40 + i) for i in range(8)]
TEXTS = ["a red bicycle in the snow", "a dog", "photo of 3 cats on a sofa", "", "zebra 42"]
MODELS = ("tiny_clip_dir", "tiny_dino_dir")


@functools.cache
def _encoder(model_dir: Path, dtype: str) -> Encoder:
    settings = EncoderSettings(models=(str(model_dir),), device="cpu", dtype=dtype, batch_size=8)
    return load_encoder(str(model_dir), settings)


def _float8(weight: torch.Tensor) -> torch.Tensor:
    return weight.to(torch.float8_e4m3fn).to(weight.dtype)


def _int4(weight: torch.Tensor) -> torch.Tensor:
    scale = weight.abs().amax(dim=1, keepdim=True) / 7  # per channel, like our int8
    return (weight / scale).round().clamp(-8, 7) * scale


# One step coarser than each precision under test.
COARSER: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "bfloat16": _float8,
    "int8": _int4,
}


def _coarser_encoder(model_dir: Path, dtype: str) -> Encoder:
    """A fresh float32 encoder whose linear weights are rounded with ``COARSER[dtype]``."""
    settings = EncoderSettings(models=(str(model_dir),), device="cpu", dtype="float32")
    encoder = load_encoder(str(model_dir), settings)
    assert isinstance(encoder, HFEncoder)
    with torch.no_grad():
        for module in encoder.model.modules():
            if isinstance(module, nn.Linear):
                module.weight.copy_(COARSER[dtype](module.weight))
    return encoder


def _unit_float32(vectors: np.ndarray) -> None:
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("dtype", PRECISIONS)
@pytest.mark.parametrize("which", MODELS)
def test_image_vectors_stay_within_the_floor(
    which: str, dtype: str, request: pytest.FixtureRequest
) -> None:
    model_dir: Path = request.getfixturevalue(which)
    encoder = _encoder(model_dir, dtype)
    assert encoder.precision is Precision(dtype)
    floor = PARITY_FLOOR[Precision(dtype)]
    reference = reference_image_vectors(model_dir, IMAGES)
    ours = encoder.encode_images(IMAGES)
    _unit_float32(ours)  # float32 and unit length, whatever computed them
    assert cosines(ours, reference).min() >= floor
    # Control: a precision one step coarser is caught by the same bound.
    coarser = _coarser_encoder(model_dir, dtype).encode_images(IMAGES)
    assert cosines(coarser, reference).min() < floor


@pytest.mark.parametrize("dtype", PRECISIONS)
def test_text_vectors_stay_within_the_floor(tiny_clip_dir: Path, dtype: str) -> None:
    encoder = _encoder(tiny_clip_dir, dtype)
    floor = PARITY_FLOOR[Precision(dtype)]
    reference = reference_text_vectors(tiny_clip_dir, TEXTS)
    ours = encoder.encode_texts(TEXTS)
    _unit_float32(ours)
    assert cosines(ours, reference).min() >= floor
    coarser = _coarser_encoder(tiny_clip_dir, dtype).encode_texts(TEXTS)
    assert cosines(coarser, reference).min() < floor


def test_fused_clip_layers_run_in_every_precision(tiny_clip_dir: Path) -> None:
    """The fused vision layers stay in place: cast to bfloat16, or with int8 linears inside."""
    for dtype in PRECISIONS:
        encoder = _encoder(tiny_clip_dir, dtype)
        assert isinstance(encoder, HFEncoder)
        model: Any = encoder.model
        *full, last = model.vision_model.encoder.layers
        assert all(isinstance(layer.self_attn, FusedQKVAttention) for layer in full)
        assert isinstance(last.self_attn, FirstTokenAttention)
        projections = [full[0].self_attn.qkv, last.self_attn.q, last.self_attn.kv]
        if dtype == "bfloat16":
            assert all(p.weight.dtype == torch.bfloat16 for p in projections)
        else:
            # int8 swaps the fused linears for dynamic int8 ones; the text tower keeps float32.
            assert not any(type(p) is nn.Linear for p in projections)
            assert type(model.text_model.encoder.layers[0].mlp.fc1) is nn.Linear
