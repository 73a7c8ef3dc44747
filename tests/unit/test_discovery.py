"""Model discovery reads config.json and picks the encoder, or says clearly what is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vizdex.core.errors import ModelNotFoundError, UnsupportedModelError
from vizdex.core.kinds import ModelKind
from vizdex.encoders.discovery import SUPPORTED_MODEL_TYPES, ModelFamily, discover_model
from vizdex.encoders.loading import load_encoder, load_encoders
from vizdex.encoders.settings import EncoderSettings


def _config_dir(tmp_path: Path, model_type: str) -> Path:
    directory = tmp_path / model_type
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": model_type}))
    return directory


def test_local_clip_is_multimodal(tiny_clip_dir: Path) -> None:
    spec = discover_model(str(tiny_clip_dir))
    assert (spec.model_type, spec.family, spec.kind) == (
        "clip",
        ModelFamily.CLIP,
        ModelKind.MULTIMODAL,
    )
    assert spec.is_local and spec.source == str(tiny_clip_dir.resolve())


def test_local_dinov3_is_vision(tiny_dino_dir: Path) -> None:
    spec = discover_model(str(tiny_dino_dir))
    assert (spec.model_type, spec.kind) == ("dinov3_vit", ModelKind.VISION)


@pytest.mark.parametrize("model_type", ["dinov3_convnext", "dinov2"])
def test_other_dino_types_are_vision(tmp_path: Path, model_type: str) -> None:
    spec = discover_model(str(_config_dir(tmp_path, model_type)))
    assert spec.family is ModelFamily.DINO and spec.kind is ModelKind.VISION


def test_unsupported_type_lists_what_is_supported(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError) as caught:
        discover_model(str(_config_dir(tmp_path, "bert")))
    message = str(caught.value)
    assert "'bert'" in message
    for supported in SUPPORTED_MODEL_TYPES:
        assert supported in message


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        discover_model(str(tmp_path))


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        discover_model(str(tmp_path / "nope"))


def test_directory_with_config_but_no_weights(tmp_path: Path) -> None:
    directory = _config_dir(tmp_path, "clip")
    with pytest.raises(ModelNotFoundError, match="could not load") as caught:
        load_encoder(str(directory), EncoderSettings(models=(str(directory),), device="cpu"))
    assert "VIZDEX_MODELS" in str(caught.value)


def test_offline_hub_id_says_which_model_and_how_to_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotFoundError) as caught:
        discover_model("openai/clip-vit-base-patch32")
    message = str(caught.value)
    assert "'openai/clip-vit-base-patch32'" in message
    assert "HF_HUB_OFFLINE" in message and "VIZDEX_MODELS=" in message


def test_load_encoders_keys_by_configured_name(cpu_settings: EncoderSettings) -> None:
    encoders = load_encoders(cpu_settings)
    assert list(encoders) == list(cpu_settings.models)
    assert [e.kind for e in encoders.values()] == [ModelKind.MULTIMODAL, ModelKind.VISION]


def test_importing_the_package_loads_no_model_code() -> None:
    code = (
        "import sys, vizdex.encoders.loading, vizdex.encoders.discovery, vizdex.cli.main\n"
        "loaded = [m for m in sys.modules if m.startswith('transformers.models.')]\n"
        "print(len(loaded))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "0"
