"""The trained tiny CLIP keeps its retrieval quality in every precision.

On one gallery (``tests/support/trained_clip.py``: 120 scenes never trained on, ten per caption),
text precision@10 (each caption's top ten) and reverse-lookup top-1 (a rescaled JPEG copy of
each scene finds the scene) of bfloat16 and int8 stay within 0.02 of float32's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.trained_clip import CLASSES, caption, gallery, lookalike, make_trained_clip
from vizdex.core.precision import Precision
from vizdex.encoders.base import Encoder
from vizdex.encoders.loading import load_encoder
from vizdex.encoders.settings import EncoderSettings

TOLERANCE = 0.02


@dataclass(frozen=True)
class Gallery:
    images: list[Image.Image]
    labels: np.ndarray
    lookalikes: list[Image.Image]


@dataclass(frozen=True)
class Quality:
    text_precision_at_10: float
    reverse_top1: float


@pytest.fixture(scope="module")
def trained_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_trained_clip(tmp_path_factory.mktemp("models") / "trained-clip")


@pytest.fixture(scope="module")
def scenes() -> Gallery:
    images, labels = gallery()
    return Gallery(images, np.asarray(labels), [lookalike(image) for image in images])


def _encoder(model_dir: Path, dtype: str) -> Encoder:
    settings = EncoderSettings(models=(str(model_dir),), device="cpu", dtype=dtype)
    return load_encoder(str(model_dir), settings)


def _quality(encoder: Encoder, scenes: Gallery) -> Quality:
    vectors = encoder.encode_images(scenes.images)
    queries = encoder.encode_texts([caption(*c) for c in CLASSES])
    top10 = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]
    hits = scenes.labels[top10] == np.arange(len(CLASSES))[:, None]
    copies = encoder.encode_images(scenes.lookalikes)
    found = np.argmax(copies @ vectors.T, axis=1)
    return Quality(float(hits.mean()), float((found == np.arange(len(vectors))).mean()))


@pytest.fixture(scope="module")
def float32_quality(trained_clip_dir: Path, scenes: Gallery) -> Quality:
    return _quality(_encoder(trained_clip_dir, "float32"), scenes)


def test_the_trained_model_retrieves_what_an_untrained_one_cannot(
    float32_quality: Quality, scenes: Gallery, tmp_path: Path
) -> None:
    """Control: the quality measured is the training's (chance precision@10 is 1/12)."""
    assert float32_quality.text_precision_at_10 >= 0.7
    assert float32_quality.reverse_top1 >= 0.95
    untrained = _quality(
        _encoder(make_trained_clip(tmp_path / "untrained", steps=0), "float32"), scenes
    )
    assert untrained.text_precision_at_10 < 0.3


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_precision_keeps_retrieval_quality(
    trained_clip_dir: Path, scenes: Gallery, float32_quality: Quality, dtype: str
) -> None:
    encoder = _encoder(trained_clip_dir, dtype)
    assert encoder.precision is Precision(dtype)
    quality = _quality(encoder, scenes)
    assert abs(quality.text_precision_at_10 - float32_quality.text_precision_at_10) <= TOLERANCE
    assert abs(quality.reverse_top1 - float32_quality.reverse_top1) <= TOLERANCE
