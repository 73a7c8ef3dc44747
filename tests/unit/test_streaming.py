"""The decode->encode stream: same vectors as direct encoding, input order, isolated failures."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from PIL import Image

import vizdex.encoders.streaming as streaming
from tests.support.synthetic_photos import jpeg_bytes, make_photo
from vizdex.core.errors import ImageRejectedError
from vizdex.encoders.base import Encoder
from vizdex.encoders.device_jpeg import read_jpeg_header
from vizdex.encoders.streaming import EncodedBatch, JpegBytes, draft_side, encode_stream
from vizdex.imaging import DecodedImage, decode_file, decode_image_bytes
from vizdex.imaging.settings import ImageInputSettings

DOOR = ImageInputSettings()
T = TypeVar("T")
P = TypeVar("P")


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    files = []
    for i in range(11):
        path = folder / f"{i:02d}.jpg"
        path.write_bytes(jpeg_bytes(make_photo(1000 + 13 * i, 750, seed=i)))
        files.append(path)
    return files


def merged(batches: Iterable[EncodedBatch[T, P]], name: str) -> EncodedBatch[T, P]:
    """What a stream promises, whatever its batching: items, one model's vectors, failures."""
    whole: EncodedBatch[T, P] = EncodedBatch()
    rows = []
    for batch in batches:
        assert len(batch.vectors[name]) == len(batch.items)  # one vector per item, per batch
        whole.items += batch.items
        whole.failures += batch.failures
        rows.append(batch.vectors[name])
    whole.vectors[name] = np.concatenate(rows)
    return whole


def _load(path: Path, min_side: int | None) -> tuple[Image.Image, DecodedImage]:
    decoded = decode_file(path, DOOR, min_side=min_side)
    return decoded.image, decoded


def test_stream_matches_direct_encoding(
    photo_files: list[Path], clip_encoder: Encoder, dino_encoder: Encoder
) -> None:
    encoders = [clip_encoder, dino_encoder]
    batches = list(
        encode_stream(photo_files, encoders, _load, batch_size=4, workers=2, min_batch=4)
    )
    assert [len(b.items) for b in batches] == [4, 4, 3]
    items = [item for b in batches for item in b.items]
    assert items == photo_files
    side = draft_side(encoders)
    assert side == 448
    images = [decode_file(p, DOOR, min_side=side).image for p in photo_files]
    for encoder in encoders:
        streamed = np.concatenate([b.vectors[encoder.name] for b in batches])
        assert np.allclose(streamed, encoder.encode_images(images), atol=1e-5)
    payload = batches[0].payloads[0]
    assert (payload.width, payload.height, payload.format) == (1000, 750, "JPEG")


@pytest.mark.parametrize("min_batch", [1, None, 8])  # eager to hold-out-for-full batching
def test_failures_are_isolated_and_reported(
    photo_files: list[Path], tmp_path: Path, clip_encoder: Encoder, min_batch: int | None
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    missing = tmp_path / "missing.jpg"
    items = [photo_files[0], broken, photo_files[1], missing]
    # How many batches carry them is the stream's business (it sends what is ready early).
    stream = encode_stream(
        items, [clip_encoder], _load, batch_size=8, workers=2, min_batch=min_batch
    )
    whole = merged(stream, clip_encoder.name)
    assert whole.items == [photo_files[0], photo_files[1]]  # each good item once, in order
    images = [decode_file(p, DOOR, min_side=draft_side([clip_encoder])).image for p in whole.items]
    expected = clip_encoder.encode_images(images)
    np.testing.assert_allclose(whole.vectors[clip_encoder.name], expected, atol=1e-5)
    assert [(item, type(error)) for item, error in whole.failures] == [
        (broken, ImageRejectedError),
        (missing, ImageRejectedError),
    ]
    assert [error.code for _, error in whole.failures] == ["corrupt", "not_found"]


def test_only_failures_still_yield_a_batch(tmp_path: Path, clip_encoder: Encoder) -> None:
    missing = tmp_path / "missing.jpg"
    batches = list(encode_stream([missing], [clip_encoder], _load, batch_size=8))
    assert len(batches) == 1 and batches[0].items == []
    assert batches[0].vectors[clip_encoder.name].shape == (0, clip_encoder.dim)


def test_decoding_runs_a_bounded_window_ahead(clip_encoder: Encoder) -> None:
    lock = threading.Lock()
    started: list[int] = []
    consumed = 0
    most_ahead = 0

    def load(index: int, min_side: int | None) -> tuple[Image.Image, int]:
        with lock:
            started.append(index)
        return Image.new("RGB", (64, 64), (index % 256, 0, 0)), index

    for batch in encode_stream(range(200), [clip_encoder], load, batch_size=8, workers=2):
        consumed += len(batch.items)
        with lock:
            most_ahead = max(most_ahead, len(started) - consumed)
    assert consumed == 200
    assert most_ahead <= 8 + 2 * 2


def _jpeg_loader(path: Path, min_side: int | None) -> tuple[JpegBytes, Path]:
    data = path.read_bytes()
    header = read_jpeg_header(data, DOOR)

    def fallback() -> Image.Image:
        return decode_image_bytes(data, DOOR, min_side=min_side).image

    return JpegBytes(data, fallback, header.orientation, header.width * header.height), path


def test_device_decoded_jpegs_match_the_cpu_path(
    photo_files: list[Path], clip_encoder: Encoder, dino_encoder: Encoder
) -> None:
    encoders = [clip_encoder, dino_encoder]
    # On this machine the "device" is the CPU: torchvision's decoder stands in for nvJPEG.
    on_device = list(encode_stream(photo_files, encoders, _jpeg_loader, batch_size=4, workers=2))
    on_cpu = list(encode_stream(photo_files, encoders, _load, batch_size=4, workers=2))
    assert [i for b in on_device for i in b.items] == [i for b in on_cpu for i in b.items]
    for encoder in encoders:
        a = np.concatenate([b.vectors[encoder.name] for b in on_device])
        b = np.concatenate([b.vectors[encoder.name] for b in on_cpu])
        # Full-size device decode vs draft CPU decode: the draft parity bound applies.
        assert np.sum(a * b, axis=1).min() >= 0.99


def test_device_decode_falls_back_and_isolates_failures(
    photo_files: list[Path], tmp_path: Path, clip_encoder: Encoder
) -> None:
    cmyk = tmp_path / "cmyk.jpg"
    make_photo(500, 400, seed=9).convert("CMYK").save(cmyk, format="JPEG")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photo_files[0].read_bytes()[:2000])  # valid header, truncated body
    items = [photo_files[0], cmyk, broken, photo_files[1]]
    batch = merged(
        encode_stream(items, [clip_encoder], _jpeg_loader, batch_size=8), clip_encoder.name
    )
    assert [error.code for _, error in batch.failures] == ["corrupt"]
    assert [item for item, _ in batch.failures] == [broken]
    assert batch.items == [photo_files[0], cmyk, photo_files[1]]
    vectors = batch.vectors[clip_encoder.name]
    assert vectors.shape == (3, clip_encoder.dim)
    reference = clip_encoder.encode_images([decode_image_bytes(cmyk.read_bytes(), DOOR).image])
    assert float(vectors[1] @ reference[0]) >= 0.99


def test_waiting_on_a_slow_item_feeds_the_device_first(
    photo_files: list[Path], clip_encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded = threading.Event()
    real = streaming._device_pixels

    def spy(jpegs: list[JpegBytes], encoders: list[Encoder], side: int) -> object:
        decoded.set()
        return real(jpegs, encoders, side)

    monkeypatch.setattr(streaming, "_device_pixels", spy)

    def load(index: int, min_side: int | None) -> tuple[JpegBytes, Path]:
        # Item 1 only finishes once item 0 went to the device: a stream that waited for a full
        # chunk (or the batch end) before decoding would leave the device idle here, and fail.
        if index == 1 and not decoded.wait(timeout=10):
            raise AssertionError("the device sat idle while the stream waited for a slow item")
        return _jpeg_loader(photo_files[index], min_side)

    (batch,) = encode_stream([0, 1], [clip_encoder], load, batch_size=8, workers=2)
    assert batch.items == [0, 1] and batch.vectors[clip_encoder.name].shape[0] == 2


def test_the_model_gets_what_is_ready_instead_of_idling(clip_encoder: Encoder) -> None:
    first_batch_out = threading.Event()

    def load(index: int, min_side: int | None) -> tuple[Image.Image, int]:
        # Item 4 waits until a batch reached the consumer: a stream that held out for a full
        # batch of 8 would wait here forever (and fail after the timeout).
        if index == 4 and not first_batch_out.wait(timeout=10):
            raise AssertionError("the stream waited for a full batch while items were ready")
        return Image.new("RGB", (64, 64), (index, 0, 0)), index

    batches = []
    for batch in encode_stream(range(12), [clip_encoder], load, batch_size=8, workers=2):
        batches.append(batch.items)
        first_batch_out.set()
        assert batch.vectors[clip_encoder.name].shape == (len(batch.items), clip_encoder.dim)
    # At least a quarter of the batch size (2) goes early, at most what was ready (items 0-3).
    assert 2 <= len(batches[0]) <= 4
    assert [item for items in batches for item in items] == list(range(12))
    assert all(len(items) <= 8 for items in batches)
