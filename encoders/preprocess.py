"""Preprocessing equal to a model's own Hugging Face image processor, as plain functions.

The spec is read off the model's processor (so its defaults and ``preprocessor_config.json`` are
honoured), and applied with the same torchvision operations in the same order: uint8 resize with
antialiasing, center crop, fused rescale + normalise. Kept free of model state so it can run in
decode threads and be tested alone; it works on CPU and CUDA tensors alike.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as tvF

# PIL resample codes as stored in preprocessor_config.json -> torchvision modes, as transformers'
# torchvision backend maps them. Its LANCZOS kernel runs on the CPU only, from torchvision 0.27;
# elsewhere transformers (and preprocess_tensor) use BICUBIC instead.
_INTERPOLATION = {
    0: InterpolationMode.NEAREST_EXACT,
    1: InterpolationMode.LANCZOS,
    2: InterpolationMode.BILINEAR,
    3: InterpolationMode.BICUBIC,
    4: InterpolationMode.BOX,
    5: InterpolationMode.HAMMING,
}

_LANCZOS_KERNEL = tuple(int(part) for part in torchvision.__version__.split(".")[:2]) >= (0, 27)

# Processors whose pipeline we reproduce exactly, and whether they rescale to float *before*
# resizing (DINOv3 does; the generic torchvision backend resizes uint8). Others use the fallback.
EXACT_PROCESSORS: dict[str, bool] = {
    "CLIPImageProcessor": False,
    "BitImageProcessor": False,
    "DINOv3ViTImageProcessor": True,
}


@dataclass(frozen=True)
class PreprocessSpec:
    """Resize rule, crop and normalisation of one model's input pipeline."""

    interpolation: InterpolationMode
    shortest_edge: int | None = None
    size_hw: tuple[int, int] | None = None
    crop_hw: tuple[int, int] | None = None
    rescale_factor: float | None = 1 / 255
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize_in_float: bool = False

    def __post_init__(self) -> None:
        if (self.shortest_edge is None) == (self.size_hw is None):
            raise ValueError("exactly one of shortest_edge and size_hw must be set")

    @property
    def output_hw(self) -> tuple[int, int]:
        if self.crop_hw is not None:
            return self.crop_hw
        if self.size_hw is not None:
            return self.size_hw
        raise ValueError("shortest-edge resize without a crop has no fixed output size")

    @property
    def decode_min_side(self) -> int:
        """JPEG draft decoding may shrink an image until its shortest side reaches this (2x)."""
        if self.shortest_edge is not None:
            return 2 * self.shortest_edge
        assert self.size_hw is not None
        return 2 * max(self.size_hw)

    @classmethod
    def from_processor(cls, processor: Any) -> PreprocessSpec | None:
        """Read the spec off a transformers image processor; None if it does something else.

        Returning None makes the caller fall back to the processor itself, which is exact by
        construction but slower (e.g. ConvNeXt's crop_pct or padding processors).
        """
        resize_in_float = EXACT_PROCESSORS.get(type(processor).__name__)
        if resize_in_float is None:
            return None
        if getattr(processor, "crop_pct", None) is not None or getattr(processor, "do_pad", False):
            return None
        if not getattr(processor, "do_resize", False):
            return None
        size = processor.size
        shortest = getattr(size, "shortest_edge", None)
        height, width = getattr(size, "height", None), getattr(size, "width", None)
        if getattr(size, "longest_edge", None) or getattr(size, "max_height", None):
            return None
        if shortest is not None and getattr(processor, "default_to_square", False) is False:
            rule: dict[str, Any] = {"shortest_edge": int(shortest)}
        elif height is not None and width is not None:
            rule = {"size_hw": (int(height), int(width))}
        elif shortest is not None:
            rule = {"size_hw": (int(shortest), int(shortest))}
        else:
            return None
        crop = None
        if getattr(processor, "do_center_crop", False):
            crop_size = processor.crop_size
            crop = (int(crop_size.height), int(crop_size.width))
        # None means the backend's default, BILINEAR; 0 is NEAREST, not "unset".
        resample = getattr(processor, "resample", None)
        resample = 2 if resample is None else int(resample)
        normalize = bool(getattr(processor, "do_normalize", False))
        rescale = bool(getattr(processor, "do_rescale", False))
        return cls(
            interpolation=_INTERPOLATION.get(resample, InterpolationMode.BILINEAR),
            crop_hw=crop,
            rescale_factor=float(processor.rescale_factor) if rescale else None,
            mean=tuple(float(v) for v in processor.image_mean) if normalize else None,
            std=tuple(float(v) for v in processor.image_std) if normalize else None,
            resize_in_float=resize_in_float,
            **rule,
        )


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 ``[3, H, W]`` tensor sharing no memory with PIL."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    array = np.asarray(image)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def resized_hw(height: int, width: int, spec: PreprocessSpec) -> tuple[int, int]:
    """Size after the resize step, truncated like transformers' get_resize_output_image_size."""
    if spec.size_hw is not None:
        return spec.size_hw
    assert spec.shortest_edge is not None
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = spec.shortest_edge, int(spec.shortest_edge * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def center_crop(image: torch.Tensor, crop_hw: tuple[int, int]) -> torch.Tensor:
    """Center crop, zero-padding first when the image is smaller than the crop (as transformers)."""
    height, width = image.shape[-2:]
    crop_h, crop_w = crop_hw
    if crop_w > width or crop_h > height:
        padding = [
            (crop_w - width) // 2 if crop_w > width else 0,
            (crop_h - height) // 2 if crop_h > height else 0,
            (crop_w - width + 1) // 2 if crop_w > width else 0,
            (crop_h - height + 1) // 2 if crop_h > height else 0,
        ]
        image = tvF.pad(image, padding, fill=0)
        height, width = image.shape[-2:]
        if (height, width) == (crop_h, crop_w):
            return image
    top = int((height - crop_h) / 2.0)
    left = int((width - crop_w) / 2.0)
    return image[..., top : top + crop_h, left : left + crop_w]


def normalize(pixels: torch.Tensor, spec: PreprocessSpec, *, rescaled: bool) -> torch.Tensor:
    """-> float32; rescale (unless already done) and normalise fused into one affine step."""
    pixels = pixels.to(torch.float32)
    scale = 1.0 if rescaled or spec.rescale_factor is None else spec.rescale_factor
    if spec.mean is not None and spec.std is not None:
        mean = torch.tensor(spec.mean, device=pixels.device).view(-1, 1, 1) / scale
        std = torch.tensor(spec.std, device=pixels.device).view(-1, 1, 1) / scale
        return (pixels - mean) / std
    return pixels * scale if scale != 1.0 else pixels


def preprocess_tensor(image: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """uint8 ``[3, H, W]`` (any device) -> float32 model input ``[3, h, w]``."""
    height, width = image.shape[-2:]
    rescaled = spec.resize_in_float and spec.rescale_factor is not None
    if rescaled and spec.rescale_factor is not None:
        image = image.to(torch.float32) * spec.rescale_factor
    interpolation = spec.interpolation
    if interpolation == InterpolationMode.LANCZOS and not (
        _LANCZOS_KERNEL and image.device.type == "cpu"
    ):
        interpolation = InterpolationMode.BICUBIC
    image = tvF.resize(
        image, list(resized_hw(height, width, spec)), interpolation=interpolation, antialias=True
    )
    if spec.crop_hw is not None:
        image = center_crop(image, spec.crop_hw)
    return normalize(image, spec, rescaled=rescaled)


def preprocess_image(image: Image.Image, spec: PreprocessSpec) -> torch.Tensor:
    return preprocess_tensor(pil_to_tensor(image), spec)


def preprocess_images(images: Sequence[Image.Image], spec: PreprocessSpec) -> torch.Tensor:
    return torch.stack([preprocess_image(image, spec) for image in images])


# Elements (3 x H x W per image) stacked into one batched resize: bounds the float32 copy of a
# group of 12 MP photos to about 500 MB of device memory.
_BATCH_ELEMENTS = 1 << 27


def fit_within(width: int, height: int, longest: int) -> tuple[int, int]:
    """Fit ``width`` x ``height`` inside ``longest`` x ``longest``; never enlarge."""
    scale = min(1.0, longest / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def box_reduce(images: torch.Tensor, min_side: int) -> torch.Tensor:
    """Average uint8 ``[N, 3, H, W]`` over k x k blocks, the largest k keeping sides >= min_side.

    What a JPEG draft (DCT-scaled) decode does on the CPU, for pixels decoded at full size on a
    device: the exact resize then starts from a few times its output size instead of 12 MP.
    """
    factor = min(images.shape[-2:]) // min_side
    if factor < 2:
        return images
    reduced = F.avg_pool2d(images.to(torch.float32), factor)  # float16 would round block means
    return reduced.round_().clamp_(0, 255).to(torch.uint8)


def _same_size_chunks(images: Sequence[torch.Tensor]) -> list[list[int]]:
    """Indices of ``images`` grouped by shape, each group cut to the batch element budget."""
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for index, image in enumerate(images):
        groups[tuple(image.shape)].append(index)
    chunks: list[list[int]] = []
    for shape, indices in groups.items():
        step = max(1, _BATCH_ELEMENTS // max(1, shape[-3] * shape[-2] * shape[-1]))
        chunks.extend(indices[start : start + step] for start in range(0, len(indices), step))
    return chunks


def preprocess_batch(
    images: Sequence[torch.Tensor], spec: PreprocessSpec, *, draft: bool = False
) -> list[torch.Tensor]:
    """``preprocess_tensor`` for many uint8 ``[3, H, W]`` images, one batched call per size.

    Photos from one camera share a size, so a device runs a handful of kernels per batch instead
    of a handful per image. ``draft`` box-reduces large images first (see ``box_reduce``).
    """
    out: list[torch.Tensor | None] = [None] * len(images)
    for chunk in _same_size_chunks(images):
        stacked = torch.stack([images[index] for index in chunk])
        if draft:
            stacked = box_reduce(stacked, spec.decode_min_side)
        for index, pixels in zip(chunk, preprocess_tensor(stacked, spec), strict=True):
            out[index] = pixels
    return [pixels for pixels in out if pixels is not None]


def previews(images: Sequence[torch.Tensor], longest: int) -> list[Image.Image]:
    """Small RGB PIL copies (fit within ``longest``) of uint8 ``[3, H, W]`` images on any device."""
    out: list[Image.Image | None] = [None] * len(images)
    for chunk in _same_size_chunks(images):
        stacked = torch.stack([images[index] for index in chunk])
        height, width = stacked.shape[-2:]
        size_w, size_h = fit_within(width, height, longest)
        if (size_h, size_w) != (height, width):
            stacked = box_reduce(stacked, 2 * min(size_h, size_w))
            stacked = tvF.resize(
                stacked, [size_h, size_w], interpolation=InterpolationMode.BILINEAR, antialias=True
            )
        host = stacked.permute(0, 2, 3, 1).contiguous().cpu().numpy()
        for index, array in zip(chunk, host, strict=True):
            out[index] = Image.fromarray(array, "RGB")
    return [image for image in out if image is not None]
