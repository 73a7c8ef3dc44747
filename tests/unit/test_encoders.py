"""The Encoder interface on real (tiny, random) CLIP and DINOv3 checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch

from tests.support.synthetic_photos import make_photo
from vizdex.core.errors import CapabilityError, EncoderOutOfMemoryError
from vizdex.core.kinds import ModelKind
from vizdex.encoders.base import Encoder
from vizdex.encoders.hf_encoder import HFEncoder

IMAGES = [make_photo(320 + 40 * i, 240 + 30 * i, seed=i) for i in range(5)]


def test_clip_describes_itself(clip_encoder: Encoder) -> None:
    assert clip_encoder.kind is ModelKind.MULTIMODAL and clip_encoder.supports_text
    assert clip_encoder.describe() == {
        "name": clip_encoder.name,
        "kind": "multimodal",
        "dimensions": 24,
        "device": "cpu",
        "dtype": "float32",
        "precision": "float32",
    }


def test_dino_is_vision_only(dino_encoder: Encoder) -> None:
    assert dino_encoder.kind is ModelKind.VISION and not dino_encoder.supports_text
    assert dino_encoder.dim == 32
    with pytest.raises(CapabilityError, match="vision-only"):
        dino_encoder.encode_texts(["a red bicycle"])


@pytest.mark.parametrize("which", ["clip_encoder", "dino_encoder"])
def test_image_vectors_are_normalised_float32(which: str, request: pytest.FixtureRequest) -> None:
    encoder: Encoder = request.getfixturevalue(which)
    vectors = encoder.encode_images(IMAGES)
    assert vectors.shape == (len(IMAGES), encoder.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    raw = encoder.encode_images(IMAGES, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    assert np.allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), vectors, atol=1e-5)
    # Different images give different vectors; the same image the same vector.
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3)
    assert np.allclose(encoder.encode_images(IMAGES[:1])[0], vectors[0], atol=1e-5)


def test_empty_input_gives_empty_matrix(clip_encoder: Encoder) -> None:
    assert clip_encoder.encode_images([]).shape == (0, clip_encoder.dim)
    assert clip_encoder.encode_texts([]).shape == (0, clip_encoder.dim)


def test_text_vectors(clip_encoder: Encoder) -> None:
    texts = ["a red bicycle in the snow", "a cat", "a cat", "x" * 500]
    vectors = clip_encoder.encode_texts(texts)
    assert vectors.shape == (4, clip_encoder.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[1], vectors[2], atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3)


def test_batch_size_does_not_change_vectors(clip_encoder: Encoder) -> None:
    assert isinstance(clip_encoder, HFEncoder)
    whole = clip_encoder.encode_images(IMAGES)
    saved = clip_encoder.runner.batch_size
    clip_encoder.runner.batch_size = 2
    try:
        split = clip_encoder.encode_images(IMAGES)
    finally:
        clip_encoder.runner.batch_size = saved
    assert np.allclose(whole, split, atol=1e-5)


@contextmanager
def memory_limit(encoder: HFEncoder, max_batch: int) -> Iterator[list[int]]:
    """Make the model raise torch.OutOfMemoryError for batches above ``max_batch``, as CUDA does."""
    seen: list[int] = []

    def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        tensor = next(v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor))
        seen.append(tensor.shape[0])
        if tensor.shape[0] > max_batch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    model: Any = encoder.model
    target = model.vision_model if hasattr(model, "vision_model") else model
    handle = target.register_forward_pre_hook(hook, with_kwargs=True)
    saved = encoder.runner.batch_size
    try:
        yield seen
    finally:
        handle.remove()
        encoder.runner.batch_size = saved


def test_out_of_memory_halves_the_batch(dino_encoder: Encoder) -> None:
    assert isinstance(dino_encoder, HFEncoder)
    expected = dino_encoder.encode_images(IMAGES)
    dino_encoder.runner.batch_size = 8
    with memory_limit(dino_encoder, max_batch=2) as seen:
        vectors = dino_encoder.encode_images(IMAGES)
        assert dino_encoder.runner.batch_size == 2
    assert np.allclose(vectors, expected, atol=1e-5)
    assert seen[:3] == [5, 2, 2]  # 5 fails -> halved to 2, then 2, 2, 1


def test_out_of_memory_on_one_item_is_a_typed_error(dino_encoder: Encoder) -> None:
    assert isinstance(dino_encoder, HFEncoder)
    with (
        memory_limit(dino_encoder, max_batch=0),
        pytest.raises(EncoderOutOfMemoryError, match="single item"),
    ):
        dino_encoder.encode_images(IMAGES[:3])
    # The encoder still works afterwards.
    assert dino_encoder.encode_images(IMAGES[:1]).shape == (1, dino_encoder.dim)


def test_other_runtime_errors_are_not_swallowed(dino_encoder: Encoder) -> None:
    assert isinstance(dino_encoder, HFEncoder)

    def broken(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        raise RuntimeError("shape mismatch")

    handle = dino_encoder.model.register_forward_pre_hook(broken)
    try:
        with pytest.raises(RuntimeError, match="shape mismatch"):
            dino_encoder.encode_images(IMAGES[:2])
    finally:
        handle.remove()


def test_warmup_runs_a_real_batch(clip_encoder: Encoder) -> None:
    """Warmup pushes real inputs through both towers: forward hooks see the batches and outputs."""
    assert isinstance(clip_encoder, HFEncoder)
    model: Any = clip_encoder.model
    seen: dict[str, list[tuple[int, ...]]] = {"vision": [], "text": []}

    def recorder(tower: str) -> Any:
        def hook(
            module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any
        ) -> None:
            seen[tower].append(tuple(out.pooler_output.shape))

        return hook

    handles = [
        model.vision_model.register_forward_hook(recorder("vision"), with_kwargs=True),
        model.text_model.register_forward_hook(recorder("text"), with_kwargs=True),
    ]
    try:
        clip_encoder.warmup()
    finally:
        for handle in handles:
            handle.remove()
    # Two images in one vision forward, one text in one text forward, full hidden width.
    assert seen == {"vision": [(2, 32)], "text": [(1, 32)]}
