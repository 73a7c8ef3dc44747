"""Encoder settings come from VIZDEX_* variables and are validated at start-up."""

from __future__ import annotations

import pytest
import torch

from vizdex.core.errors import InvalidInputError
from vizdex.encoders.runtime import resolve_device
from vizdex.encoders.settings import DEFAULT_MODELS, EncoderSettings


def test_defaults() -> None:
    settings = EncoderSettings.from_env({})
    assert settings.models == DEFAULT_MODELS == ("openai/clip-vit-base-patch32",)
    assert (settings.device, settings.dtype, settings.batch_size) == ("auto", "auto", 64)


def test_from_environment() -> None:
    settings = EncoderSettings.from_env(
        {
            "VIZDEX_MODELS": " openai/clip-vit-base-patch32 , /models/dinov3 ,",
            "VIZDEX_DEVICE": "CPU",
            "VIZDEX_DTYPE": "bfloat16",
            "VIZDEX_BATCH_SIZE": "16",
        }
    )
    assert settings.models == ("openai/clip-vit-base-patch32", "/models/dinov3")
    assert (settings.device, settings.dtype, settings.batch_size) == ("cpu", "bfloat16", 16)


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("VIZDEX_DEVICE", "tpu", "VIZDEX_DEVICE must be one of"),
        ("VIZDEX_DTYPE", "int4", "VIZDEX_DTYPE must be one of"),
        ("VIZDEX_BATCH_SIZE", "many", "VIZDEX_BATCH_SIZE must be an integer"),
    ],
)
def test_bad_values_are_refused_with_the_variable_name(
    name: str, value: str, fragment: str
) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        EncoderSettings.from_env({name: value})


def test_cuda_requested_without_a_gpu_is_refused() -> None:
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(InvalidInputError, match="no CUDA device"):
            resolve_device("cuda")
