"""Tiny random CLIP and DINOv3 checkpoints, saved with ``save_pretrained``.

Tests load them through the same discovery path as a hub model, so nothing is downloaded and the
real loading code runs. Weights are random but seeded: vectors are reproducible.
"""

from __future__ import annotations

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


def _tiny_tokenizer() -> CLIPTokenizer:
    """A character-level BPE vocabulary: every lowercase word tokenizes, distinct words differ."""
    symbols = list(string.ascii_lowercase + string.digits)
    vocab_tokens = [*SPECIAL, *symbols, *(s + "</w>" for s in symbols)]
    vocab = {token: index for index, token in enumerate(vocab_tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], unk_token="<unk>")


def make_tiny_clip(directory: Path, *, image_size: int = 224, seed: int = 0) -> Path:
    """A CLIP with ViT-B/32's input pipeline (224 px, patch 32) but a 32-wide, 2-layer body."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer.get_vocab()),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.convert_tokens_to_ids("<|startoftext|>"),
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            "pad_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": 32,
        },
        projection_dim=24,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(directory)
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
    DINOv3ViTModel(config).save_pretrained(directory)
    DINOv3ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(
        directory
    )
    return directory
