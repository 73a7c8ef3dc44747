"""Vectors from plain transformers float32 (its own processor and model, nothing of ours):
the reference every parity test compares with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoProcessor, CLIPModel


def reference_image_vectors(model_dir: Path, images: list[Image.Image]) -> np.ndarray:
    processor = AutoImageProcessor.from_pretrained(model_dir)
    inputs = processor(images=images, return_tensors="pt")
    with torch.inference_mode():
        if (model_dir / "tokenizer.json").exists():
            clip = CLIPModel.from_pretrained(model_dir).eval()
            features = clip.get_image_features(**inputs).pooler_output
        else:
            model = AutoModel.from_pretrained(model_dir).eval()
            features = model(**inputs).pooler_output
    return torch.nn.functional.normalize(features, dim=-1).numpy()


def reference_text_vectors(model_dir: Path, texts: list[str]) -> np.ndarray:
    processor = AutoProcessor.from_pretrained(model_dir)
    model = CLIPModel.from_pretrained(model_dir).eval()
    inputs = processor(text=texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        features = model.get_text_features(**inputs).pooler_output
    return torch.nn.functional.normalize(features, dim=-1).numpy()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two ``[n, dim]`` arrays."""
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
