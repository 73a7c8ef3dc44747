"""The fused CLIP layers are exact rewrites: same vectors as the untouched transformers model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPModel

from tests.support.tiny_models import TINY_CLIP_LAYERS
from vizdex.encoders.base import Encoder
from vizdex.encoders.fused_clip import (
    FirstTokenAttention,
    FirstTokenEncoderLayer,
    FoldedQuickGeluMLP,
    FusedQKVAttention,
    fuse_clip_layers,
)
from vizdex.encoders.hf_encoder import HFEncoder


def _features(model: Any, pixels: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.inference_mode():
        image = model.get_image_features(pixel_values=pixels).pooler_output
        text = model.get_text_features(input_ids=ids, attention_mask=torch.ones_like(ids))
        return image, text.pooler_output


def _inputs(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    size = model.config.vision_config.image_size
    pixels = torch.randn(5, 3, size, size, generator=generator)
    ids = torch.randint(0, model.config.text_config.vocab_size, (4, 9), generator=generator)
    return pixels, ids


def test_fused_layers_match_the_stock_model(tiny_clip_dir: Path) -> None:
    stock: Any = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    fused: Any = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    replaced = fuse_clip_layers(fused)

    # vision: attention + MLP per layer; text: MLP per layer (its attention keeps its masks).
    assert replaced == 2 * TINY_CLIP_LAYERS + TINY_CLIP_LAYERS
    assert all(
        isinstance(layer.mlp, FoldedQuickGeluMLP) for layer in fused.text_model.encoder.layers
    )
    assert all(
        isinstance(layer.self_attn, FusedQKVAttention)
        for layer in fused.vision_model.encoder.layers
    )
    pixels, ids = _inputs(stock)
    for ours, reference in zip(
        _features(fused, pixels, ids), _features(stock, pixels, ids), strict=True
    ):
        assert torch.allclose(ours, reference, atol=1e-5, rtol=1e-4)
    # Control: the check distinguishes inputs (a different image gives a different vector).
    image, _ = _features(fused, pixels.flip(-1), ids)
    assert not torch.allclose(image, _features(stock, pixels, ids)[0], atol=1e-3)


def test_pooled_only_computes_the_cls_token_alone(tiny_clip_dir: Path) -> None:
    stock: Any = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    fused: Any = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    replaced = fuse_clip_layers(fused, pooled_only=True)

    assert replaced == 2 * TINY_CLIP_LAYERS + TINY_CLIP_LAYERS + 1
    assert isinstance(fused.vision_model.encoder.layers[-1], FirstTokenEncoderLayer)
    pixels, ids = _inputs(stock)
    with torch.inference_mode():
        ours = fused.vision_model(pixel_values=pixels)
        reference = stock.vision_model(pixel_values=pixels)
    assert ours.last_hidden_state.shape[1] == 1  # only the CLS row was computed
    assert torch.allclose(
        ours.last_hidden_state[:, 0], reference.last_hidden_state[:, 0], atol=1e-5
    )
    for mine, theirs in zip(
        _features(fused, pixels, ids), _features(stock, pixels, ids), strict=True
    ):
        assert torch.allclose(mine, theirs, atol=1e-5, rtol=1e-4)


def test_other_activations_keep_their_mlp(tiny_clip_dir: Path) -> None:
    stock: Any = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    stock.config.vision_config.hidden_act = "gelu"
    for layer in stock.vision_model.encoder.layers:
        layer.mlp.activation_fn = torch.nn.GELU()
    fused: Any = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    fused.config.vision_config.hidden_act = "gelu"
    for layer in fused.vision_model.encoder.layers:
        layer.mlp.activation_fn = torch.nn.GELU()

    fuse_clip_layers(fused)

    assert not any(
        isinstance(layer.mlp, FoldedQuickGeluMLP) for layer in fused.vision_model.encoder.layers
    )
    pixels, ids = _inputs(stock)
    ours = _features(fused, pixels, ids)[0]
    assert torch.allclose(ours, _features(stock, pixels, ids)[0], atol=1e-5, rtol=1e-4)


def test_bfloat16_fold_stays_close(tiny_clip_dir: Path) -> None:
    stock: Any = CLIPModel.from_pretrained(tiny_clip_dir, dtype=torch.bfloat16).eval()
    fused: Any = CLIPModel.from_pretrained(tiny_clip_dir, dtype=torch.bfloat16).eval()
    fuse_clip_layers(fused)
    pixels, ids = _inputs(stock)
    pixels = pixels.to(torch.bfloat16)
    for ours, reference in zip(
        _features(fused, pixels, ids), _features(stock, pixels, ids), strict=True
    ):
        cosine = F.cosine_similarity(ours.float(), reference.float())
        assert cosine.min().item() >= 0.999


def test_fused_attention_refuses_a_mask(tiny_clip_dir: Path) -> None:
    model: Any = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    attention = FusedQKVAttention(model.vision_model.encoder.layers[0].self_attn)
    hidden = torch.randn(1, 4, model.config.vision_config.hidden_size)
    with pytest.raises(ValueError, match="unmasked"):
        attention(hidden, attention_mask=torch.zeros(1, 1, 4, 4))


def test_the_encoder_runs_the_fused_model(clip_encoder: Encoder) -> None:
    assert isinstance(clip_encoder, HFEncoder)
    model: Any = clip_encoder.model
    *full, last = model.vision_model.encoder.layers
    assert all(isinstance(layer.self_attn, FusedQKVAttention) for layer in full)
    assert isinstance(last, FirstTokenEncoderLayer)
    assert isinstance(last.self_attn, FirstTokenAttention)
