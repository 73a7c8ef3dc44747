"""Device JPEG decoding: same pixels as the CPU door (within JPEG IDCT rounding), safe fallback."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import vizdex.encoders.device_jpeg as device_jpeg
from tests.support.image_corpus import jpeg_bomb, jpeg_with_orientation
from tests.support.synthetic_photos import jpeg_bytes, make_photo
from vizdex.core.errors import ImageRejectedError
from vizdex.encoders.base import Encoder
from vizdex.encoders.device_jpeg import decode_jpegs, read_jpeg_header, warm_up_decoder
from vizdex.encoders.hf_encoder import HFEncoder
from vizdex.encoders.preprocess import preprocess_tensor
from vizdex.imaging import decode_image_bytes
from vizdex.imaging.settings import ImageInputSettings

DEVICES = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    make_photo(400, 300, seed=3).save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_decoded_pixels_match_the_door(device: torch.device) -> None:
    datas = [jpeg_bytes(make_photo(640, 480, seed=1), quality=95), _rotated_jpeg()]
    decoded = decode_jpegs(datas, device)
    for data, tensor in zip(datas, decoded, strict=True):
        assert tensor is not None and tensor.device.type == device.type
        reference = np.asarray(decode_image_bytes(data, ImageInputSettings()).image)
        ours = tensor.permute(1, 2, 0).cpu().numpy()
        assert ours.shape == reference.shape  # EXIF rotation applied: 300x400 becomes 400x300
        assert np.abs(ours.astype(int) - reference.astype(int)).mean() < 2.0


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_bad_file_does_not_fail_the_batch(device: torch.device) -> None:
    good = jpeg_bytes(make_photo(320, 240, seed=2))
    results = decode_jpegs([good, b"\xff\xd8\xff\xe0 broken", good], device)
    assert results[0] is not None and results[2] is not None and results[1] is None


def test_header_checks_the_pixel_cap_and_reads_orientation() -> None:
    data = jpeg_bytes(make_photo(400, 300, seed=4))
    assert read_jpeg_header(data, ImageInputSettings(max_pixels=120_000)) == (400, 300, 1)
    assert read_jpeg_header(_rotated_jpeg(), ImageInputSettings(max_pixels=120_000)) == (
        300,
        400,
        6,
    )  # as displayed
    with pytest.raises(ImageRejectedError) as caught:
        read_jpeg_header(data, ImageInputSettings(max_pixels=119_999))
    assert caught.value.code == "too_many_pixels"
    with pytest.raises(ImageRejectedError) as corrupt:
        read_jpeg_header(b"nope", ImageInputSettings(max_pixels=10))
    assert corrupt.value.code == "corrupt"


def test_header_refusals_match_the_door() -> None:
    # 65,000 x 65,000 trips Pillow's own bomb check while opening: too_many_pixels, as the door
    # says, not "corrupt".
    cases = [(jpeg_bomb(), "too_many_pixels"), (jpeg_bytes(make_photo(400, 300))[:20], "corrupt")]
    for data, code in cases:
        with pytest.raises(ImageRejectedError) as header:
            read_jpeg_header(data, ImageInputSettings())
        with pytest.raises(ImageRejectedError) as door:
            decode_image_bytes(data, ImageInputSettings())
        assert header.value.code == code
        assert (header.value.code, header.value.message) == (door.value.code, door.value.message)


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_every_exif_orientation_matches_the_door(device: torch.device) -> None:
    datas = [jpeg_with_orientation(orientation, size=(64, 32)) for orientation in range(1, 9)]
    headers = [read_jpeg_header(data, ImageInputSettings()) for data in datas]
    given = decode_jpegs(datas, device, [header.orientation for header in headers])
    parsed = decode_jpegs(datas, device)  # orientations read from the headers
    for data, header, tensor, again in zip(datas, headers, given, parsed, strict=True):
        assert tensor is not None and again is not None
        reference = np.asarray(decode_image_bytes(data, ImageInputSettings()).image)
        assert tuple(tensor.shape[1:]) == reference.shape[:2] == (header.height, header.width)
        ours = tensor.permute(1, 2, 0).cpu().numpy().astype(int)
        assert np.abs(ours - reference.astype(int)).mean() < 2.0, header.orientation
        assert torch.equal(tensor, again)


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_device_preprocessing_gives_the_same_vectors(
    device: torch.device, clip_encoder: Encoder
) -> None:
    assert isinstance(clip_encoder, HFEncoder) and clip_encoder.preprocess_spec is not None
    data = jpeg_bytes(make_photo(800, 600, seed=5), quality=95)
    tensor = decode_jpegs([data], device)[0]
    assert tensor is not None
    pixels = preprocess_tensor(tensor, clip_encoder.preprocess_spec).unsqueeze(0).cpu()
    ours = clip_encoder.encode_pixels(pixels)
    reference = clip_encoder.encode_images([decode_image_bytes(data, ImageInputSettings()).image])
    assert float(ours[0] @ reference[0]) >= 0.999


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_warm_up_reports_a_working_decoder(device: torch.device) -> None:
    assert warm_up_decoder(device) is True
    data = jpeg_bytes(make_photo(64, 48, seed=7))
    (tensor,) = decode_jpegs([data], device)
    assert tensor is not None and tuple(tensor.shape) == (3, 48, 64)


def test_warm_up_reports_a_decoder_that_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("decode_jpegs_cuda: torchvision not compiled with nvJPEG support")

    monkeypatch.setattr(device_jpeg, "decode_jpeg", broken)
    assert warm_up_decoder(torch.device("cpu")) is False
