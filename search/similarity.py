"""Similarity between given images and texts, outside any collection (zero-shot labels etc.)."""

from __future__ import annotations

import numpy as np

# CLIP's learned temperature is exp(logit_scale) ≈ 100 for the released checkpoints.
DEFAULT_LOGIT_SCALE = 100.0


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.asarray(matrix / np.maximum(norms, np.float32(1e-12)), dtype=np.float32)


def cosine_matrix(left: np.ndarray, right: np.ndarray | None = None) -> np.ndarray:
    """Pairwise cosine similarity, ``[len(left), len(right)]`` (``right`` defaults to ``left``)."""
    a = normalize_rows(left)
    b = a if right is None else normalize_rows(right)
    return np.asarray(np.clip(a @ b.T, -1.0, 1.0), dtype=np.float32)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=axis, keepdims=True), dtype=np.float32)


def text_probabilities(scores: np.ndarray, logit_scale: float = DEFAULT_LOGIT_SCALE) -> np.ndarray:
    """Per image, a probability over the given texts: softmax of the scaled cosine scores."""
    return softmax(np.asarray(scores, dtype=np.float64) * logit_scale, axis=1)
