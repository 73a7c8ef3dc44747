"""Build encoders from settings: discovery decides the family, then weights load once."""

from __future__ import annotations

import logging

from vizdex.encoders.base import Encoder
from vizdex.encoders.clip import ClipEncoder
from vizdex.encoders.compute_thread import run_for_device
from vizdex.encoders.dino import DinoEncoder
from vizdex.encoders.discovery import ModelFamily, discover_model
from vizdex.encoders.precision import resolve_precision
from vizdex.encoders.runtime import resolve_device
from vizdex.encoders.settings import EncoderSettings

log = logging.getLogger(__name__)


def load_encoder(model_id: str, settings: EncoderSettings) -> Encoder:
    spec = discover_model(model_id)
    device = resolve_device(settings.device)
    precision = resolve_precision(settings.dtype, device)
    log.info(
        "loading %s (%s) on %s in %s (%s)",
        model_id,
        spec.model_type,
        device,
        precision.precision,
        precision.reason,
    )
    # Loaded where it will run: see compute_thread.py for why a CPU model keeps to one thread.
    if spec.family is ModelFamily.CLIP:
        return run_for_device(
            device,
            spec.model_id,
            ClipEncoder,
            spec,
            device=device,
            precision=precision,
            batch_size=settings.batch_size,
            text_batch_size=settings.text_batch_size,
        )
    return run_for_device(
        device,
        spec.model_id,
        DinoEncoder,
        spec,
        device=device,
        precision=precision,
        batch_size=settings.batch_size,
    )


def load_encoders(settings: EncoderSettings) -> dict[str, Encoder]:
    """Every configured model, keyed by the name it was configured with (id or directory)."""
    return {model_id: load_encoder(model_id, settings) for model_id in settings.models}
