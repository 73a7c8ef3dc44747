"""JPEG decoding on the model's device (nvJPEG on CUDA), with a per-image CPU fallback.

On a GPU the CPU is usually what limits ingest of large photos; decoding there frees it. The
bytes must already have passed the image door's byte cap and format sniffing; the pixel cap is
checked from the header here, before any pixel is decoded.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import torch
from PIL import Image

from encoders.errors import ImageRejectedError

# torchvision 0.29 deprecates its image codecs (warning on every call) in favour of torchcodec;
# nvJPEG decoding through torchvision still works and torchcodec is not a dependency we want yet.
warnings.filterwarnings(
    "ignore",
    message="The image decoding and encoding capabilities of TorchVision",
    category=DeprecationWarning,
)
from torchvision.io import ImageReadMode, decode_jpeg  # noqa: E402


def header_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    """(width, height) from the JPEG header, refusing images over the pixel cap."""
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as probe:
            width, height = probe.size
    except (OSError, Image.DecompressionBombError, SyntaxError) as error:
        raise ImageRejectedError(f"not a readable JPEG: {error}", code="corrupt") from error
    if width * height > max_pixels:
        raise ImageRejectedError(
            f"image is {width:,}×{height:,} = {width * height / 1e6:,.0f} MP; "
            f"the limit is {max_pixels / 1e6:,.0f} MP",
            code="too_many_pixels",
        )
    return width, height


def decode_jpegs(datas: Sequence[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """Batch-decode to uint8 ``[3, H, W]`` RGB on ``device`` with EXIF orientation applied.

    None marks an image the device decoder could not handle (e.g. CMYK or progressive corner
    cases); the caller decodes those through the CPU door instead. One bad file never fails the
    others: a failed batch is retried image by image.
    """
    tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in datas]
    if not tensors:
        return []
    try:
        decoded = decode_jpeg(
            tensors, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True
        )
        return list(decoded)
    except RuntimeError:
        results: list[torch.Tensor | None] = []
        for tensor in tensors:
            try:
                results.append(
                    decode_jpeg(
                        tensor, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True
                    )
                )
            except RuntimeError:
                results.append(None)
        return results
