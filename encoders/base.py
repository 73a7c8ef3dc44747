"""The one ``Encoder`` interface every model family implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from vizdex.core.errors import CapabilityError
from vizdex.core.kinds import ModelKind
from vizdex.core.precision import Precision
from vizdex.encoders.preprocess import PreprocessSpec


class Encoder(ABC):
    """Turns images (and, for multimodal models, texts) into float32 ``[n, dim]`` vectors.

    Vectors are L2-normalised unless ``normalize=False``. Implementations split work into
    ``preprocess`` (CPU, thread-safe, plain functions) and ``forward`` so that callers can overlap
    decoding with model work.
    """

    name: str
    kind: ModelKind
    dim: int
    device: torch.device
    dtype: torch.dtype  # of weights and activations (float32 around int8 linears)
    precision: Precision  # what the catalog records with the vectors
    # None when the model's processor does something we do not reproduce (it then runs itself).
    preprocess_spec: PreprocessSpec | None = None

    @property
    def supports_text(self) -> bool:
        return self.kind is ModelKind.MULTIMODAL

    @property
    @abstractmethod
    def decode_min_side(self) -> int | None:
        """Shortest side JPEGs may be draft-decoded to (2x the input size); None: decode fully."""

    @abstractmethod
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB images -> CPU float32 pixel tensor ``[n, 3, H, W]`` exactly as the model expects."""

    @abstractmethod
    def encode_pixels(self, pixels: torch.Tensor, *, normalize: bool = True) -> np.ndarray:
        """Preprocessed pixels -> vectors, batched with OOM back-off."""

    def encode_images(self, images: Sequence[Image.Image], *, normalize: bool = True) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_pixels(self.preprocess(images), normalize=normalize)

    def encode_texts(self, texts: Sequence[str], *, normalize: bool = True) -> np.ndarray:
        raise CapabilityError(
            f"model {self.name!r} is a vision-only model and cannot encode text; "
            "use a multimodal model such as CLIP for text queries",
            model=self.name,
        )

    def warmup(self) -> None:
        """One real batch through preprocessing and the model, so the first request is not slow."""
        image = Image.new("RGB", (320, 240), (127, 64, 200))
        self.encode_images([image, image])
        if self.supports_text:
            self.encode_texts(["warm up"])

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "dimensions": self.dim,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "precision": self.precision.value,
        }


class WrappedEncoder(Encoder):
    """An encoder in front of another (queues, instrumentation): the same model, its name and
    shape; every call goes to ``inner`` unless a subclass changes it."""

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self.name = inner.name
        self.kind = inner.kind
        self.dim = inner.dim
        self.device = inner.device
        self.dtype = inner.dtype
        self.precision = inner.precision
        self.preprocess_spec = inner.preprocess_spec

    @property
    def decode_min_side(self) -> int | None:
        return self.inner.decode_min_side

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.inner.preprocess(images)

    def encode_pixels(self, pixels: torch.Tensor, *, normalize: bool = True) -> np.ndarray:
        return self.inner.encode_pixels(pixels, normalize=normalize)

    def encode_texts(self, texts: Sequence[str], *, normalize: bool = True) -> np.ndarray:
        return self.inner.encode_texts(texts, normalize=normalize)

    def warmup(self) -> None:
        self.inner.warmup()

    def describe(self) -> dict[str, object]:
        return self.inner.describe()
