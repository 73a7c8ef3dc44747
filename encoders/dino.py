"""DINOv3 / DINOv2: image-only encoders; the vector is the CLS (pooler) output."""

from __future__ import annotations

from typing import Any

import torch

from vizdex.core.kinds import ModelKind
from vizdex.encoders.discovery import ModelSpec
from vizdex.encoders.hf_encoder import HFEncoder, load_pretrained
from vizdex.encoders.precision import ResolvedPrecision


class DinoEncoder(HFEncoder):
    def __init__(
        self,
        spec: ModelSpec,
        *,
        device: torch.device,
        precision: ResolvedPrecision,
        batch_size: int,
    ) -> None:
        from transformers import AutoImageProcessor, AutoModel

        model = load_pretrained(AutoModel, spec, "weights", dtype=precision.dtype)
        processor = load_pretrained(AutoImageProcessor, spec, "image processor")
        config = model.config
        dim = int(getattr(config, "hidden_size", 0) or config.hidden_sizes[-1])
        super().__init__(
            spec,
            model,
            processor,
            device=device,
            precision=precision,
            batch_size=batch_size,
            dim=dim,
            kind=ModelKind.VISION,
        )

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        model: Any = self.model
        pooled: torch.Tensor = model(pixel_values=pixel_values).pooler_output
        return pooled
