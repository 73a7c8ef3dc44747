"""JPEG decoding on the model's device (nvJPEG on CUDA), with a per-image CPU fallback.

On a GPU the CPU is usually what limits ingest of large photos; decoding there frees it. The
bytes must already have passed the image door's byte cap and format sniffing; the pixel cap is
checked from the header here (``read_jpeg_header``), before any pixel is decoded, and so is the
data, strictly, so that a damaged file is refused as the CPU door refuses it.

EXIF orientation is applied here rather than by torchvision: its decoder honours
``apply_exif_orientation`` on the CPU only, so CUDA-decoded photos came out sideways.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch
from PIL import Image

from vizdex.core.errors import ImageRejectedError
from vizdex.imaging import read_header
from vizdex.imaging.settings import ImageInputSettings

# torchvision 0.29 deprecates its image codecs (warning on every call) in favour of torchcodec;
# nvJPEG decoding through torchvision still works and torchcodec is not a dependency we want yet.
warnings.filterwarnings(
    "ignore",
    message="The image decoding and encoding capabilities of TorchVision",
    category=DeprecationWarning,
)
from torchvision.io import ImageReadMode, decode_jpeg  # noqa: E402

_NO_PIXEL_CAP = ImageInputSettings(max_pixels=Image.MAX_IMAGE_PIXELS or 2**31)


class JpegHeader(NamedTuple):
    """What the header says: the size as displayed (after EXIF orientation) and the orientation."""

    width: int
    height: int
    orientation: int  # EXIF 1-8; 1 = as stored


def read_jpeg_header(
    data: bytes, settings: ImageInputSettings, *, check_data: bool = True
) -> JpegHeader:
    """Displayed size and orientation from the JPEG header, with the door's pixel cap.

    ``check_data`` (on unless the caller only wants the header): refuse the file exactly when
    the CPU door would, by reading its data strictly at the smallest DCT scale before the device
    decodes it. A scan cut short with an end marker appended has whole-looking markers, and what
    nvJPEG makes of one (grey, an error, garbage) is not something to rely on.
    """
    return JpegHeader(*read_header(data, "JPEG", settings, check_data=check_data))


def ends_complete(data: bytes) -> bool:
    """Whether the JPEG ends with its end-of-image marker.

    A truncated file lacks it; a decoder on a device may fill the missing part in silently, so
    such files are left to the CPU door, which says whether they are whole.
    """
    return data.endswith(b"\xff\xd9")


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply EXIF ``orientation`` to ``[..., H, W]`` pixels as ``ImageOps.exif_transpose`` does."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return torch.rot90(image, -1, dims=(-2, -1))
    if orientation == 7:
        return image.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return torch.rot90(image, 1, dims=(-2, -1))
    return image


def decode_jpegs(
    datas: Sequence[bytes],
    device: torch.device,
    orientations: Sequence[int] | None = None,
) -> list[torch.Tensor | None]:
    """Batch-decode to uint8 ``[3, H, W]`` RGB on ``device``, EXIF orientation applied.

    ``orientations`` (from ``read_jpeg_header``) saves parsing the headers again. None marks an
    image the device decoder could not handle (e.g. CMYK or progressive corner cases); the caller
    decodes those through the CPU door instead. One bad file never fails the others: a failed
    batch is retried image by image.
    """
    if not datas:
        return []
    if orientations is None:
        orientations = [_orientation_of(data) for data in datas]
    tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in datas]
    try:
        decoded: list[torch.Tensor | None] = list(
            decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
        )
    except RuntimeError:
        decoded = []
        for tensor in tensors:
            try:
                decoded.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                decoded.append(None)
    return [
        None if image is None else orient(image, orientation)
        for image, orientation in zip(decoded, orientations, strict=True)
    ]


def warm_up_decoder(device: torch.device) -> bool:
    """Decode one tiny JPEG on ``device``; False if the device decoder cannot run at all.

    torchvision sets nvJPEG up (handles, pinned and device buffers) on its first call, which
    would otherwise land inside the first batch.
    """
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 150)).save(buffer, format="JPEG")
    return decode_jpegs([buffer.getvalue()], device, [1])[0] is not None


def _orientation_of(data: bytes) -> int:
    try:
        return read_jpeg_header(data, _NO_PIXEL_CAP, check_data=False).orientation
    except ImageRejectedError:
        return 1  # the decoder will refuse it, or decode it as stored
