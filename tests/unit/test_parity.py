"""Our vectors equal the transformers reference (processor + model) for the same RGB image.

This is the proof that real checkpoints will give the reference vectors: the same code runs for
hub models, only the weights differ. Both sides get the same RGB image from the image door; alpha
and EXIF handling are the door's own tests.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.support.reference_vectors import cosines, reference_image_vectors, reference_text_vectors
from tests.support.synthetic_photos import jpeg_bytes, make_photo
from vizdex.encoders.base import Encoder
from vizdex.imaging import decode_image_bytes
from vizdex.imaging.settings import ImageInputSettings

DOOR = ImageInputSettings()


def _encoded(image: Image.Image, fmt: str, **save: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def _exif_rotated_jpeg(seed: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    return _encoded(make_photo(400, 300, seed), "JPEG", exif=exif.tobytes(), quality=92)


def _varied_inputs() -> list[bytes]:
    """Sizes, aspects and modes; the door turns each into the RGB image both sides get."""
    photo = make_photo(500, 375, seed=11)
    rgba = make_photo(300, 300, seed=12).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((300, 300)))
    return [
        jpeg_bytes(make_photo(640, 480, seed=1)),
        jpeg_bytes(make_photo(480, 640, seed=2)),
        jpeg_bytes(make_photo(1200, 300, seed=3)),
        _encoded(make_photo(150, 90, seed=4), "PNG"),
        _encoded(rgba, "PNG"),
        _encoded(photo.convert("L"), "PNG"),
        _encoded(photo.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        _encoded(photo.convert("CMYK"), "JPEG", quality=92),
        _encoded(make_photo(333, 222, seed=5), "WEBP", quality=90),
        _exif_rotated_jpeg(seed=6),
    ]


@pytest.mark.parametrize(
    ("encoder_name", "dir_name"),
    [("clip_encoder", "tiny_clip_dir"), ("dino_encoder", "tiny_dino_dir")],
)
def test_full_decode_parity(
    encoder_name: str, dir_name: str, request: pytest.FixtureRequest
) -> None:
    encoder: Encoder = request.getfixturevalue(encoder_name)
    images = [decode_image_bytes(data, DOOR).image for data in _varied_inputs()]
    assert all(image.mode == "RGB" for image in images)
    ours = encoder.encode_images(images)
    reference = reference_image_vectors(request.getfixturevalue(dir_name), images)
    assert cosines(ours, reference).min() >= 0.9999
    # Control: distinct inputs are far apart, so equality above is not an accident of the model.
    assert (ours @ ours.T)[np.triu_indices(len(ours), 1)].min() < 0.9


@pytest.mark.parametrize(
    ("encoder_name", "dir_name"),
    [("clip_encoder", "tiny_clip_dir"), ("dino_encoder", "tiny_dino_dir")],
)
def test_draft_decode_parity(
    encoder_name: str, dir_name: str, request: pytest.FixtureRequest
) -> None:
    """Big JPEGs draft-decoded (DCT-scaled) stay within cosine 0.99 of the full-decode reference."""
    encoder: Encoder = request.getfixturevalue(encoder_name)
    min_side = encoder.decode_min_side
    assert min_side == 448
    sizes = [(2400, 1800), (1800, 2400), (3000, 1000), (1000, 1000), (640, 480)]
    files = [jpeg_bytes(make_photo(w, h, seed=20 + i)) for i, (w, h) in enumerate(sizes)]
    drafted = [decode_image_bytes(data, DOOR, min_side=min_side) for data in files]
    full = [decode_image_bytes(data, DOOR).image for data in files]
    # The draft really reduced the big ones, never below 2x the model input.
    assert drafted[0].image.size == (600, 450) and (drafted[0].width, drafted[0].height) == (
        2400,
        1800,
    )
    assert all(min(d.image.size) >= min(min_side, d.width, d.height) for d in drafted)
    ours = encoder.encode_images([d.image for d in drafted])
    reference = reference_image_vectors(request.getfixturevalue(dir_name), full)
    assert cosines(ours, reference).min() >= 0.99
    # Control: the bound is tight enough to catch a wrong image (a mirror of the same photo).
    mirrored = encoder.encode_images([ImageOps.mirror(drafted[0].image)])
    assert cosines(mirrored, reference[:1])[0] < 0.99


def test_text_parity(clip_encoder: Encoder, tiny_clip_dir: Path) -> None:
    texts = ["a red bicycle in the snow", "a dog", "photo of 3 cats on a sofa", ""]
    reference = reference_text_vectors(tiny_clip_dir, texts)
    assert cosines(clip_encoder.encode_texts(texts), reference).min() >= 0.9999
