"""Session fixtures: tiny random checkpoints on disk and encoders loaded from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tiny_models import make_tiny_clip, make_tiny_dinov3
from vizdex.encoders.base import Encoder
from vizdex.encoders.loading import load_encoder
from vizdex.encoders.settings import EncoderSettings


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_dino_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dinov3(tmp_path_factory.mktemp("models") / "tiny-dinov3")


@pytest.fixture(scope="session")
def cpu_settings(tiny_clip_dir: Path, tiny_dino_dir: Path) -> EncoderSettings:
    return EncoderSettings(
        models=(str(tiny_clip_dir), str(tiny_dino_dir)), device="cpu", dtype="float32", batch_size=8
    )


@pytest.fixture(scope="session")
def clip_encoder(tiny_clip_dir: Path, cpu_settings: EncoderSettings) -> Encoder:
    return load_encoder(str(tiny_clip_dir), cpu_settings)


@pytest.fixture(scope="session")
def dino_encoder(tiny_dino_dir: Path, cpu_settings: EncoderSettings) -> Encoder:
    return load_encoder(str(tiny_dino_dir), cpu_settings)
