"""Our preprocessing equals each model's own Hugging Face processor, pixel for pixel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from transformers import (
    AutoImageProcessor,
    BitImageProcessor,
    CLIPImageProcessor,
    ConvNextImageProcessor,
    DINOv3ViTImageProcessor,
)

from tests.support.synthetic_photos import make_photo
from vizdex.encoders.preprocess import (
    PreprocessSpec,
    pil_to_tensor,
    preprocess_images,
    preprocess_tensor,
    resized_hw,
)

SIZES = [(640, 480), (480, 640), (224, 224), (1000, 150), (57, 800), (100, 90), (3, 5)]


def _images() -> list[Image.Image]:
    return [make_photo(w, h, seed=i) for i, (w, h) in enumerate(SIZES)]


@pytest.mark.parametrize("which", ["tiny_clip_dir", "tiny_dino_dir"])
def test_matches_model_processor(which: str, request: pytest.FixtureRequest) -> None:
    directory: Path = request.getfixturevalue(which)
    processor = AutoImageProcessor.from_pretrained(directory)
    spec = PreprocessSpec.from_processor(processor)
    assert spec is not None
    images = _images()
    reference = processor(images=images, return_tensors="pt")["pixel_values"]
    ours = preprocess_images(images, spec)
    assert ours.shape == reference.shape
    assert torch.allclose(ours, reference, atol=1e-5)


def test_dinov2_style_processor_is_reproduced() -> None:
    processor = BitImageProcessor(
        size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}
    )
    spec = PreprocessSpec.from_processor(processor)
    assert spec is not None and spec.shortest_edge == 256 and spec.crop_hw == (224, 224)
    images = _images()
    reference = processor(images=images, return_tensors="pt")["pixel_values"]
    assert torch.allclose(preprocess_images(images, spec), reference, atol=1e-5)


# PIL's codes as a preprocessor_config.json stores them: NEAREST, LANCZOS, BILINEAR, BICUBIC
# (BOX and HAMMING have no tensor kernel: the processor itself refuses them).
@pytest.mark.parametrize("resample", [0, 1, 2, 3])
@pytest.mark.parametrize("processor_class", [CLIPImageProcessor, DINOv3ViTImageProcessor])
def test_every_resample_the_processor_runs_is_reproduced(
    processor_class: type[CLIPImageProcessor | DINOv3ViTImageProcessor], resample: int
) -> None:
    processor = processor_class(resample=resample)
    spec = PreprocessSpec.from_processor(processor)
    assert spec is not None
    images = _images()
    reference = processor(images=images, return_tensors="pt")["pixel_values"]
    assert torch.allclose(preprocess_images(images, spec), reference, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("processor_class", [CLIPImageProcessor, DINOv3ViTImageProcessor])
def test_lanczos_on_a_cuda_device_falls_back_as_the_processor_does(
    processor_class: type[CLIPImageProcessor | DINOv3ViTImageProcessor],
) -> None:
    """LANCZOS has a CPU kernel only: on a device both sides resize with BICUBIC instead."""
    processor = processor_class(resample=1)
    spec = PreprocessSpec.from_processor(processor)
    assert spec is not None
    images = _images()
    reference = processor(images=images, return_tensors="pt", device="cuda")["pixel_values"]
    ours = torch.stack([preprocess_tensor(pil_to_tensor(i).cuda(), spec) for i in images])
    assert ours.device.type == "cuda"
    assert torch.allclose(ours, reference.to(ours.device), atol=1e-4)


SMALLER_THAN_THE_CROP = {"height": 24, "width": 30}


@pytest.mark.parametrize(
    "options",
    [
        {"do_normalize": False},
        {"do_rescale": False, "do_normalize": False},
        # Resized below the crop in one or both sides: padded with zeros (odd amounts split with
        # the extra pixel after), then cropped, as the processor does.
        {"size": {"height": 21, "width": 37}, "crop_size": SMALLER_THAN_THE_CROP},
        {"size": {"height": 30, "width": 19}, "crop_size": SMALLER_THAN_THE_CROP},
        {"size": {"height": 17, "width": 23}, "crop_size": SMALLER_THAN_THE_CROP},
    ],
)
@pytest.mark.parametrize("processor_class", [CLIPImageProcessor, DINOv3ViTImageProcessor])
def test_processor_options_are_reproduced(
    processor_class: type[CLIPImageProcessor | DINOv3ViTImageProcessor], options: dict[str, Any]
) -> None:
    if "crop_size" in options:
        options = {**options, "do_center_crop": True}
    processor = processor_class(**options)
    spec = PreprocessSpec.from_processor(processor)
    assert spec is not None
    images = _images()
    # Without rescaling the processor hands back uint8; ours is always the model's float32.
    reference = processor(images=images, return_tensors="pt")["pixel_values"].to(torch.float32)
    ours = preprocess_images(images, spec)
    assert ours.shape == reference.shape
    assert torch.allclose(ours, reference, atol=1e-5)


def test_a_spec_rescales_to_the_unit_range_by_default() -> None:
    spec = PreprocessSpec(interpolation=InterpolationMode.BILINEAR, size_hw=(4, 4))
    white = Image.new("RGB", (10, 10), (255, 255, 255))
    assert torch.equal(preprocess_images([white], spec), torch.ones(1, 3, 4, 4))


def test_unknown_processor_falls_back() -> None:
    # ConvNeXt's crop_pct pipeline is not reproduced: the encoder runs the processor itself.
    assert PreprocessSpec.from_processor(ConvNextImageProcessor()) is None


def test_resize_truncates_like_transformers() -> None:
    spec = PreprocessSpec(interpolation=InterpolationMode.BICUBIC, shortest_edge=224)
    assert resized_hw(480, 640, spec) == (224, 298)
    assert resized_hw(641, 480, spec) == (299, 224)
    assert resized_hw(100, 100, spec) == (224, 224)


def test_decode_min_side_is_twice_the_input(tiny_clip_dir: Path) -> None:
    spec = PreprocessSpec.from_processor(AutoImageProcessor.from_pretrained(tiny_clip_dir))
    assert spec is not None and spec.decode_min_side == 448
    square = PreprocessSpec.from_processor(
        AutoImageProcessor.from_pretrained(
            tiny_clip_dir, size={"height": 256, "width": 200}, do_center_crop=False
        )
    )
    assert square is not None and square.decode_min_side == 512


def test_output_is_float32_and_normalised() -> None:
    spec = PreprocessSpec.from_processor(BitImageProcessor())
    assert spec is not None
    white = Image.new("RGB", (300, 300), (255, 255, 255))
    out = preprocess_images([white], spec)
    assert out.dtype == torch.float32
    expected = (1.0 - np.array(spec.mean)) / np.array(spec.std)
    assert np.allclose(out[0, :, 100, 100].numpy(), expected, atol=1e-4)
