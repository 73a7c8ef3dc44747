"""CLIP: images and texts into one space; vectors are the projected (pooled) embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vizdex.core.kinds import ModelKind
from vizdex.encoders.discovery import ModelSpec
from vizdex.encoders.fused_clip import fuse_clip_layers
from vizdex.encoders.hf_encoder import HFEncoder, load_pretrained
from vizdex.encoders.precision import ResolvedPrecision
from vizdex.encoders.runtime import BatchRunner


class ClipEncoder(HFEncoder):
    # int8 is for the image tower: with one activation scale per call, a text batch's padding
    # and end tokens set the scale and text vectors fell to cosine 0.984 of float32 on the tiny
    # checkpoint (images: 0.998). Text queries are few and short; they stay in float32.
    int8_parts = ("vision_model", "visual_projection")

    def __init__(
        self,
        spec: ModelSpec,
        *,
        device: torch.device,
        precision: ResolvedPrecision,
        batch_size: int,
        text_batch_size: int = 256,
    ) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        model = load_pretrained(CLIPModel, spec, "weights", dtype=precision.dtype)
        # Same vectors, faster forward; pooled_only is safe because only pooler_output is read.
        # Fused before any int8 quantization, which then finds the fused linears.
        fuse_clip_layers(model, pooled_only=True)
        processor = load_pretrained(AutoImageProcessor, spec, "image processor")
        self.tokenizer = load_pretrained(AutoTokenizer, spec, "tokenizer")
        self.max_text_tokens = int(model.config.text_config.max_position_embeddings)
        super().__init__(
            spec,
            model,
            processor,
            device=device,
            precision=precision,
            batch_size=batch_size,
            dim=int(model.config.projection_dim),
            kind=ModelKind.MULTIMODAL,
        )
        self.text_runner = BatchRunner(text_batch_size, device, f"{spec.model_id} (text)")

    @property
    def logit_scale(self) -> float:
        """CLIP's learned temperature (100 for the released checkpoints), for zero-shot softmax."""
        model: Any = self.model
        return float(model.logit_scale.detach().float().exp().item())

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        model: Any = self.model
        # transformers 5 returns an output object whose pooler_output is the projection.
        out = model.get_image_features(pixel_values=pixel_values)
        features: torch.Tensor = out.pooler_output if hasattr(out, "pooler_output") else out
        return features

    def encode_texts(self, texts: Sequence[str], *, normalize: bool = True) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model: Any = self.model
        tokens = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_text_tokens,
            return_tensors="pt",
        )
        ids, mask = tokens["input_ids"], tokens["attention_mask"]

        def step(start: int, stop: int) -> torch.Tensor:
            out = model.get_text_features(
                input_ids=ids[start:stop].to(self.device),
                attention_mask=mask[start:stop].to(self.device),
            )
            features: torch.Tensor = out.pooler_output if hasattr(out, "pooler_output") else out
            return features.float()

        return self._run(len(texts), step, normalize, self.text_runner)
