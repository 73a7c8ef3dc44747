"""What a model can embed; torch-free so that search and the web can name kinds without torch."""

from __future__ import annotations

from enum import StrEnum


class ModelKind(StrEnum):
    """What a model can embed: ``vision`` (images only) or ``multimodal`` (images and text)."""

    VISION = "vision"
    MULTIMODAL = "multimodal"
