"""What CLIP and DINO encoders share: loading, preprocessing, forward with OOM back-off."""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vizdex.core.errors import ModelNotFoundError
from vizdex.core.kinds import ModelKind
from vizdex.encoders.base import Encoder
from vizdex.encoders.compute_thread import run_for_device
from vizdex.encoders.discovery import ModelSpec
from vizdex.encoders.precision import ResolvedPrecision, apply_precision
from vizdex.encoders.preprocess import PreprocessSpec, preprocess_images
from vizdex.encoders.runtime import BatchRunner


def load_pretrained(loader: Any, spec: ModelSpec, what: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained`` with one clear error when files are missing (e.g. offline) or
    damaged (e.g. a truncated safetensors file, whose error type is the library's own)."""
    try:
        return loader.from_pretrained(spec.source, **kwargs)
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ModelNotFoundError(
            f"could not load the {what} of model {spec.model_id!r} from {spec.source!r}: "
            f"{reason} (missing or damaged files?). "
            "If the hub is unreachable, point VIZDEX_MODELS at a local directory saved with "
            "save_pretrained (config.json, weights and preprocessor_config.json).",
            model=spec.model_id,
        ) from error


class HFEncoder(Encoder):
    """A transformers model behind the Encoder interface."""

    # Submodules whose linear layers VIZDEX_DTYPE=int8 quantizes (empty: the whole model).
    int8_parts: tuple[str, ...] = ()

    def __init__(
        self,
        spec: ModelSpec,
        model: torch.nn.Module,
        processor: Any,
        *,
        device: torch.device,
        precision: ResolvedPrecision,
        batch_size: int,
        dim: int,
        kind: ModelKind,
    ) -> None:
        self.spec = spec
        self.name = spec.model_id
        self.kind = kind
        self.dim = dim
        self.device = device
        self.dtype = precision.dtype
        self.precision = precision.precision
        self.model = apply_precision(
            model.to(device=device, dtype=self.dtype).eval(), precision, self.int8_parts
        )
        self.processor = processor
        self.preprocess_spec = PreprocessSpec.from_processor(processor)
        self.runner = BatchRunner(batch_size, device, self.name)
        # One forward at a time per model: concurrent calls would only fight over the device.
        self._forward_lock = threading.Lock()

    @property
    def decode_min_side(self) -> int | None:
        return None if self.preprocess_spec is None else self.preprocess_spec.decode_min_side

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        if self.preprocess_spec is not None:
            return preprocess_images(images, self.preprocess_spec)
        pixels: torch.Tensor = self.processor(images=list(images), return_tensors="pt")[
            "pixel_values"
        ]
        return pixels.to(torch.float32)

    @abstractmethod
    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Model forward on a device batch -> ``[n, dim]`` features."""

    def encode_pixels(self, pixels: torch.Tensor, *, normalize: bool = True) -> np.ndarray:
        def step(start: int, stop: int) -> torch.Tensor:
            batch = pixels[start:stop].to(self.device, dtype=self.dtype, non_blocking=True)
            return self.image_features(batch).float()

        return self._run(len(pixels), step, normalize)

    def encode_images(self, images: Sequence[Image.Image], *, normalize: bool = True) -> np.ndarray:
        # Preprocess one batch at a time so a long list never holds every pixel tensor at once.
        size = self.runner.batch_size
        chunks = [
            self.encode_pixels(self.preprocess(images[i : i + size]), normalize=normalize)
            for i in range(0, len(images), size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), dtype=np.float32)

    def _run(
        self,
        total: int,
        step: Callable[[int, int], torch.Tensor],
        normalize: bool,
        runner: BatchRunner | None = None,
    ) -> np.ndarray:
        if total == 0:
            return np.zeros((0, self.dim), dtype=np.float32)

        def forward() -> np.ndarray:
            with self._forward_lock, torch.inference_mode():
                features = (runner or self.runner).run(total, step)
                if normalize:
                    features = F.normalize(features, dim=-1)
                return features.cpu().numpy().astype(np.float32, copy=False)

        return run_for_device(self.device, self.name, forward)
