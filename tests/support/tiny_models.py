"""Tiny random CLIP and DINOv3 checkpoints, saved with ``save_pretrained``.

Tests load them through the same discovery path as a hub model, so nothing is downloaded and the
real loading code runs. Weights are random but seeded: vectors are reproducible.
"""

from __future__ import annotations

import math
import string
from pathlib import Path

import torch
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTokenizer,
    DINOv3ViTConfig,
    DINOv3ViTImageProcessor,
    DINOv3ViTModel,
)

SPECIAL = ["<|startoftext|>", "<|endoftext|>", "<unk>"]


def _spread_weights(model: torch.nn.Module, seed: int, gain: float = 2.0) -> None:
    """Re-draw linear/conv weights at ``gain / sqrt(fan_in)``.

    Hugging Face's default init (std 0.02) makes a tiny random ViT map every image to nearly the
    same vector (pairwise cosine > 0.93), which would let a parity check pass by accident. With
    these weights different photos land far apart and a mirrored photo scores below 0.95.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, gain / math.sqrt(fan_in), generator=generator)


def _tiny_tokenizer() -> CLIPTokenizer:
    """A character-level BPE vocabulary: every lowercase word tokenizes, distinct words differ."""
    symbols = list(string.ascii_lowercase + string.digits)
    vocab_tokens = [*SPECIAL, *symbols, *(s + "</w>" for s in symbols)]
    vocab = {token: index for index, token in enumerate(vocab_tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], unk_token="<unk>")


# make_tiny_clip's depth (both towers); tests that count per-layer rewrites use it.
TINY_CLIP_LAYERS = 2


def tiny_clip_config(
    tokenizer: CLIPTokenizer,
    *,
    image_size: int = 224,
    patch_size: int = 32,
    width: int = 32,
    projection_dim: int = 24,
    max_text_tokens: int = 77,
) -> CLIPConfig:
    """Both towers ``width`` wide with ``TINY_CLIP_LAYERS`` layers and two heads."""
    body = {
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": TINY_CLIP_LAYERS,
        "num_attention_heads": 2,
    }
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return CLIPConfig(
        text_config={
            **body,
            "vocab_size": len(tokenizer.get_vocab()),
            "max_position_embeddings": max_text_tokens,
            "bos_token_id": tokenizer.convert_tokens_to_ids("<|startoftext|>"),
            "eos_token_id": end,
            "pad_token_id": end,
        },
        vision_config={**body, "image_size": image_size, "patch_size": patch_size},
        projection_dim=projection_dim,
    )


def make_tiny_clip(
    directory: Path, *, image_size: int = 224, seed: int = 0, projection_dim: int = 24
) -> Path:
    """A CLIP with ViT-B/32's input pipeline (224 px, patch 32) but a 32-wide, 2-layer body
    (``projection_dim``: its vectors' width)."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_tokenizer()
    config = tiny_clip_config(tokenizer, image_size=image_size, projection_dim=projection_dim)
    torch.manual_seed(seed)
    model = CLIPModel(config)
    _spread_weights(model, seed)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(directory)
    return directory


def make_tiny_dinov3(directory: Path, *, image_size: int = 224, seed: int = 0) -> Path:
    """A DINOv3 ViT with the real 224 px / patch-16 input pipeline and a 32-wide, 2-layer body."""
    directory.mkdir(parents=True, exist_ok=True)
    config = DINOv3ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        patch_size=16,
        image_size=image_size,
        num_register_tokens=4,
    )
    torch.manual_seed(seed)
    model = DINOv3ViTModel(config)
    _spread_weights(model, seed)
    model.save_pretrained(directory)
    DINOv3ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(
        directory
    )
    return directory


def make_vit_b32_clip(directory: Path, *, seed: int = 0) -> Path:
    """A CLIP with ViT-B/32's full shape (random weights), for benchmarks: same cost as the real."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_tokenizer()
    torch.manual_seed(seed)
    CLIPModel(CLIPConfig()).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    CLIPImageProcessor().save_pretrained(directory)
    return directory
