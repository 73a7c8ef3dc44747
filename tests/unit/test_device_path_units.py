"""Units of the device-decode path: batched preprocessing, previews, batched durable writes,
the CPU assist, the JPEG completeness check and the thumbnail sink."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torchvision.transforms import InterpolationMode

import vizdex.encoders.preprocess as preprocess_module
import vizdex.encoders.streaming as streaming_module
import vizdex.indexer.thumbnail_sink as thumbnail_sink_module
from tests.support.image_corpus import jpeg_with_orientation, truncated
from tests.support.synthetic_photos import jpeg_bytes, make_photo
from vizdex.core import stage_clock
from vizdex.core.errors import ImageRejectedError
from vizdex.core.stage_clock import StageClock
from vizdex.encoders.base import Encoder
from vizdex.encoders.device_jpeg import ends_complete, orient, read_jpeg_header
from vizdex.encoders.preprocess import (
    PreprocessSpec,
    box_reduce,
    fit_within,
    pil_to_tensor,
    preprocess_batch,
    preprocess_tensor,
    previews,
)
from vizdex.encoders.streaming import CpuAssist, JpegBytes, _prepare, encode_stream
from vizdex.imaging import decode_image_bytes
from vizdex.imaging.settings import ImageInputSettings
from vizdex.indexer.loading import ItemLoader
from vizdex.indexer.settings import IndexerSettings
from vizdex.indexer.sources import Fresh, Known, PathItem, Payload, Unchanged
from vizdex.indexer.storage import DataStore
from vizdex.indexer.thumbnail_sink import ThumbnailSink
from vizdex.indexer.thumbnails import make_thumbnail
from vizdex.search import Catalog

DOOR = ImageInputSettings()


def _tensor(width: int, height: int, seed: int) -> torch.Tensor:
    return pil_to_tensor(make_photo(width, height, seed=seed))


def _mixed_sizes() -> list[torch.Tensor]:
    # Interleaved so that grouping by size has to put the results back in input order.
    return [
        _tensor(320, 240, 0),
        _tensor(200, 300, 1),
        _tensor(320, 240, 2),
        _tensor(50, 40, 3),
        _tensor(200, 300, 4),
        _tensor(320, 240, 5),
    ]


# -- fit_within --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "longest", "expected"),
    [
        (1000, 500, 256, (256, 128)),
        (500, 1000, 256, (128, 256)),
        (900, 600, 256, (256, 171)),  # 170.67 rounds up
        (300, 300, 256, (256, 256)),
        (100, 50, 256, (100, 50)),  # never enlarged
        (256, 10, 256, (256, 10)),  # already fits exactly
        (10_000, 10, 256, (256, 1)),  # 0.256 would round to 0: at least one pixel
        (1, 5000, 64, (1, 64)),
    ],
)
def test_fit_within_exact_sizes(
    width: int, height: int, longest: int, expected: tuple[int, int]
) -> None:
    assert fit_within(width, height, longest) == expected


# -- box_reduce --------------------------------------------------------------------------------


def test_box_reduce_picks_the_largest_factor_and_averages_blocks() -> None:
    generator = torch.Generator().manual_seed(7)
    images = torch.randint(0, 256, (2, 3, 800, 1000), dtype=torch.uint8, generator=generator)
    reduced = box_reduce(images, 224)  # 800 // 224 = 3; a factor of 4 would leave 200 < 224
    assert reduced.dtype == torch.uint8
    assert reduced.shape == (2, 3, 266, 333)
    assert min(reduced.shape[-2:]) >= 224
    # Block (row 5, column 7) of the second image, by hand: the rounded mean of its 3 x 3 pixels.
    block = images[1, :, 15:18, 21:24].to(torch.float64)
    expected = torch.round(block.mean(dim=(-2, -1))).to(torch.uint8)
    assert torch.equal(reduced[1, :, 5, 7], expected)
    # And every block, against numpy in float64.
    host = images.numpy().astype(np.float64)[..., : 266 * 3, : 333 * 3]
    means = host.reshape(2, 3, 266, 3, 333, 3).mean(axis=(3, 5))
    assert np.array_equal(reduced.numpy(), np.round(means).astype(np.uint8))


def test_box_reduce_leaves_small_images_alone() -> None:
    images = torch.zeros((1, 3, 447, 900), dtype=torch.uint8)
    assert box_reduce(images, 224) is images  # 447 // 224 = 1
    tiny = torch.zeros((1, 3, 100, 100), dtype=torch.uint8)
    assert box_reduce(tiny, 224) is tiny  # factor 0
    exactly_twice = torch.full((1, 3, 448, 500), 9, dtype=torch.uint8)
    reduced = box_reduce(exactly_twice, 224)
    assert reduced.shape == (1, 3, 224, 250)
    assert bool((reduced == 9).all())


# -- preprocess_batch --------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["clip_encoder", "dino_encoder"])
def test_preprocess_batch_equals_image_by_image(which: str, request: pytest.FixtureRequest) -> None:
    encoder: Encoder = request.getfixturevalue(which)
    spec = encoder.preprocess_spec
    assert spec is not None
    assert spec.resize_in_float is (which == "dino_encoder")
    images = _mixed_sizes()
    batched = preprocess_batch(images, spec)
    assert len(batched) == len(images)
    for image, pixels in zip(images, batched, strict=True):
        assert pixels.dtype == torch.float32
        assert pixels.shape == (3, *spec.output_hw)
        assert torch.equal(pixels, preprocess_tensor(image, spec))
    # Different inputs gave different outputs, so the order check above means something.
    assert not torch.equal(batched[0], batched[2])


def test_preprocess_batch_cut_into_chunks_keeps_order(
    clip_encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = clip_encoder.preprocess_spec
    assert spec is not None
    # Room for two 320 x 240 images per batched call: the group of three is cut in two.
    monkeypatch.setattr(preprocess_module, "_BATCH_ELEMENTS", 2 * 3 * 320 * 240)
    images = _mixed_sizes()
    batched = preprocess_batch(images, spec)
    assert len(batched) == len(images)
    for image, pixels in zip(images, batched, strict=True):
        assert torch.equal(pixels, preprocess_tensor(image, spec))


@pytest.mark.parametrize(
    ("budget", "calls"),
    [
        # The default budget holds every group whole: one resize per size (3, 2 and 1 images).
        (None, [1, 2, 3]),
        # Two 320 x 240 images (and two 200 x 300 ones, which are smaller) per call.
        (2 * 3 * 320 * 240, [1, 1, 2, 2]),
        # Less than one 320 x 240 image: each image still goes, alone.
        (3 * 320 * 240 - 1, [1, 1, 1, 1, 1, 1]),
    ],
)
def test_preprocess_batch_groups_each_size_within_the_element_budget(
    clip_encoder: Encoder, monkeypatch: pytest.MonkeyPatch, budget: int | None, calls: list[int]
) -> None:
    """One batched call per size is the point (a device runs a few kernels per batch, not per
    image); the budget bounds the float copy each call makes."""
    spec = clip_encoder.preprocess_spec
    assert spec is not None
    if budget is not None:
        monkeypatch.setattr(preprocess_module, "_BATCH_ELEMENTS", budget)
    real = preprocess_module.preprocess_tensor
    sizes: list[int] = []

    def counting(image: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
        sizes.append(image.shape[0])
        return real(image, spec)

    monkeypatch.setattr(preprocess_module, "preprocess_tensor", counting)
    assert len(preprocess_batch(_mixed_sizes(), spec)) == 6
    assert sorted(sizes) == calls


def test_preprocess_batch_of_nothing() -> None:
    spec = PreprocessSpec(interpolation=InterpolationMode.BILINEAR, size_hw=(8, 8))
    assert preprocess_batch([], spec) == []
    assert preprocess_batch([], spec, draft=True) == []
    assert previews([], 64) == []


def test_draft_preprocessing_is_close_to_the_exact_vector(clip_encoder: Encoder) -> None:
    spec = clip_encoder.preprocess_spec
    assert spec is not None
    photo = make_photo(2000, 1500, seed=11)
    large = pil_to_tensor(photo)
    assert min(large.shape[-2:]) // spec.decode_min_side >= 2  # the draft really reduces it
    drafted = preprocess_batch([large, large], spec, draft=True)
    exact = preprocess_batch([large], spec)
    assert not torch.equal(drafted[0], exact[0])
    assert torch.equal(drafted[0], drafted[1])
    vectors = clip_encoder.encode_pixels(torch.stack(drafted))
    reference = clip_encoder.encode_images([photo])
    assert float(vectors[0] @ reference[0]) >= 0.99


def test_draft_leaves_images_below_twice_the_draft_side_exact(clip_encoder: Encoder) -> None:
    spec = clip_encoder.preprocess_spec
    assert spec is not None
    # Shortest side 800 < 2 * 448: no whole box factor of 2 fits, so nothing is reduced.
    images = [_tensor(1200, 800, 3), _tensor(300, 200, 4)]
    drafted = preprocess_batch(images, spec, draft=True)
    exact = preprocess_batch(images, spec)
    for a, b in zip(drafted, exact, strict=True):
        assert torch.equal(a, b)


# -- previews ----------------------------------------------------------------------------------


def test_previews_fit_keep_aspect_colour_and_order() -> None:
    photos = [
        make_photo(1200, 900, seed=1),
        make_photo(300, 800, seed=2),
        make_photo(100, 60, seed=3),  # smaller than the preview: not enlarged
        make_photo(1200, 900, seed=4),
        make_photo(2000, 40, seed=5),
    ]
    small = previews([pil_to_tensor(photo) for photo in photos], 256)
    assert len(small) == len(photos)
    for photo, preview in zip(photos, small, strict=True):
        assert isinstance(preview, Image.Image)
        assert preview.mode == "RGB"
        assert preview.size == fit_within(photo.width, photo.height, 256)
        assert max(preview.size) <= max(256, max(photo.size)) and preview.width <= photo.width
        source_mean = np.asarray(photo, dtype=np.float64).mean(axis=(0, 1))
        preview_mean = np.asarray(preview, dtype=np.float64).mean(axis=(0, 1))
        assert np.abs(source_mean - preview_mean).max() <= 3.0
    # The image that already fits comes back pixel for pixel.
    assert np.array_equal(np.asarray(small[2]), np.asarray(photos[2]))
    # The two same-size photos differ, and stay in their places.
    assert not np.array_equal(np.asarray(small[0]), np.asarray(small[3]))
    for index in (0, 3):
        reference = photos[index].resize(small[index].size, Image.Resampling.BOX)
        difference = np.abs(
            np.asarray(reference, dtype=np.int16) - np.asarray(small[index], dtype=np.int16)
        )
        assert float(difference.mean()) < 6.0


# -- durable batched writes --------------------------------------------------------------------


def _names(count: int) -> list[tuple[str, bytes]]:
    files = []
    for index in range(count):
        sha = hashlib.sha256(str(index).encode()).hexdigest()
        files.append((DataStore.thumbnail_name(sha), f"thumbnail {index}".encode() * (index + 1)))
    return files


@pytest.mark.parametrize("threads", [0, 4])
def test_put_files_writes_whole_files_and_keeps_existing_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(descriptor: int) -> None:
        synced.append(descriptor)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    pool = ThreadPoolExecutor(threads) if threads else None
    store = DataStore(tmp_path / "data")
    files = _names(5)
    assert not any(store.has(name) for name, _ in files)
    store.put_files(files[:2], pool)
    assert all(store.has(name) for name, _ in files[:2])
    folders = {store.resolve(name).parent for name, _ in files[:2]}
    assert len(synced) == 2 + len(folders)  # each file, then each folder once
    # A second batch naming one stored file with other bytes leaves that file as it was.
    again = [(files[0][0], b"other bytes"), *files[2:]]
    store.put_files(again, pool)
    for name, data in files:
        assert store.has(name)
        assert store.resolve(name).read_bytes() == data
    assert [entry.name for entry in store.temp_dir.iterdir()] == []
    store.put_files([], pool)
    store.put_files(files, pool)  # all exist: nothing to do
    assert [entry.name for entry in store.temp_dir.iterdir()] == []
    if pool is not None:
        pool.shutdown()


def test_put_files_failing_midway_leaves_no_temporary_and_no_named_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DataStore(tmp_path / "data")
    files = _names(4)
    real_fsync = os.fsync
    calls: list[int] = []

    def fsync_then_fail(descriptor: int) -> None:
        calls.append(descriptor)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync_then_fail)
    with pytest.raises(OSError, match="No space left"):
        store.put_files(files)
    monkeypatch.undo()
    assert len(calls) == 4  # every file was tried; none was renamed into place
    assert list(store.temp_dir.iterdir()) == []
    assert not any(store.has(name) for name, _ in files)
    # The store still works afterwards.
    store.put_files(files)
    assert all(store.resolve(name).read_bytes() == data for name, data in files)


def test_a_failed_rename_keeps_the_whole_files_and_drops_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DataStore(tmp_path / "data")
    files = _names(3)
    real_replace = os.replace
    renames: list[str] = []

    def replace_then_fail(source: str, target: str) -> None:
        renames.append(str(target))
        if len(renames) == 2:
            raise OSError(5, "Input/output error")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_then_fail)
    with pytest.raises(OSError, match="Input/output"):
        store.put_files(files)
    monkeypatch.undo()
    assert list(store.temp_dir.iterdir()) == []
    assert [store.has(name) for name, _ in files] == [True, False, True]
    assert store.resolve(files[0][0]).read_bytes() == files[0][1]


def test_put_files_moves_a_file_where_a_folder_belongs_aside(tmp_path: Path) -> None:
    # A file standing where a shard folder belongs is moved aside (never deleted: it may be
    # someone's data), and the write goes on: issue 14's adversarial round, 234748b.
    store = DataStore(tmp_path / "data")
    files = _names(3)
    blocked = store.root / files[2][0]
    blocked.parent.parent.mkdir(parents=True, exist_ok=True)
    blocked.parent.write_bytes(b"a file where a folder should be")
    store.put_files(files)
    assert list(store.temp_dir.iterdir()) == []
    assert all(store.resolve(name).read_bytes() == data for name, data in files)
    aside = blocked.parent.with_name(blocked.parent.name + ".corrupt")
    assert aside.read_bytes() == b"a file where a folder should be"


# -- CpuAssist ---------------------------------------------------------------------------------


def _jpeg(pixels: int) -> JpegBytes:
    def fallback() -> Image.Image:
        raise AssertionError("not decoded here")

    return JpegBytes(b"", fallback, 1, pixels)


def test_cpu_assist_takes_large_jpegs_only_when_the_device_is_behind() -> None:
    assist = CpuAssist(slots=2, backlog=3, min_pixels=1000)
    large, small = _jpeg(1000), _jpeg(999)
    assert not assist.take(large)  # nothing waiting
    assist.queued(2)
    assert assist.waiting == 2
    assert not assist.take(large)  # 2 < backlog
    assist.queued(1)
    assert not assist.take(small)  # too small to pay, whatever the backlog
    assert assist.take(large)
    assert assist.take(large)
    assert not assist.take(large)  # both slots busy
    assist.release()
    assert assist.take(large)
    assert not assist.take(large)
    assist.release()
    assist.queued(-1)  # the device caught up a little
    assert assist.waiting == 2
    assert not assist.take(large)
    assist.queued(5)
    assert assist.take(large)


def test_cpu_assist_counts_from_many_threads() -> None:
    assist = CpuAssist(slots=1, backlog=1, min_pixels=0)

    def work() -> None:
        for _ in range(1000):
            assist.queued(1)
            assist.queued(-1)
            assist.queued(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert assist.waiting == 4000


def test_prepare_decodes_on_the_cpu_when_the_assist_takes(clip_encoder: Encoder) -> None:
    photo = make_photo(1000, 750, seed=2)
    data = jpeg_bytes(photo)
    calls: list[int] = []

    def fallback() -> Image.Image:
        calls.append(1)
        return decode_image_bytes(data, DOOR, min_side=448).image

    jpeg = JpegBytes(data, fallback, 1, 1000 * 750)

    def load(item: int, min_side: int | None) -> tuple[JpegBytes, int]:
        return jpeg, item

    # Behind: the decode thread decodes it itself, and gives back its slot.
    assist = CpuAssist(slots=1, backlog=0, min_pixels=0)
    payload, prepared, preview = _prepare(7, load, [clip_encoder], 448, assist)
    assert payload == 7 and calls == [1]
    assert isinstance(prepared, list) and isinstance(preview, Image.Image)
    expected = clip_encoder.preprocess([fallback()])[0]
    assert torch.equal(prepared[0], expected)
    assert assist.waiting == 0
    assert assist.take(jpeg)  # the slot was released
    # All slots busy: handed over for the device, and counted as waiting.
    payload, prepared, preview = _prepare(8, load, [clip_encoder], 448, assist)
    assert (payload, prepared, preview) == (8, jpeg, None)
    assert assist.waiting == 1
    assist.release()
    # No assist at all: always the device.
    assert _prepare(9, load, [clip_encoder], 448, None) == (9, jpeg, None)


def test_prepare_releases_the_slot_when_the_cpu_decode_fails(clip_encoder: Encoder) -> None:
    def fallback() -> Image.Image:
        raise ImageRejectedError("damaged", code="corrupt")

    jpeg = JpegBytes(b"\xff\xd8", fallback, 1, 10**6)

    def load(item: int, min_side: int | None) -> tuple[JpegBytes, int]:
        return jpeg, item

    assist = CpuAssist(slots=1, backlog=0, min_pixels=0)
    with pytest.raises(ImageRejectedError):
        _prepare(1, load, [clip_encoder], 448, assist)
    assert assist.take(jpeg)


def test_stream_with_an_eager_assist_matches_and_balances(
    tmp_path: Path, clip_encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[CpuAssist] = []

    def eager(slots: int, backlog: int, min_pixels: int) -> CpuAssist:
        assert (backlog, min_pixels) == (2 * streaming_module.DEVICE_CHUNK, 4 * 448 * 448)
        made.append(CpuAssist(slots, 0, 0))
        return made[-1]

    monkeypatch.setattr(streaming_module, "CpuAssist", eager)
    photos = [make_photo(900, 700, seed=seed) for seed in range(6)]
    datas = [jpeg_bytes(photo) for photo in photos]

    def load(index: int, min_side: int | None) -> tuple[JpegBytes, int]:
        data = datas[index]
        header = read_jpeg_header(data, DOOR)

        def fallback() -> Image.Image:
            return decode_image_bytes(data, DOOR, min_side=min_side).image

        return JpegBytes(data, fallback, header.orientation, header.width * header.height), index

    (batch,) = encode_stream(range(6), [clip_encoder], load, batch_size=8, workers=4, min_batch=8)
    assert len(made) == 1 and made[0].waiting == 0  # every hand-over was counted back
    assert batch.items == list(range(6)) and batch.payloads == list(range(6))
    reference = clip_encoder.encode_images([decode_image_bytes(d, DOOR).image for d in datas])
    vectors = batch.vectors[clip_encoder.name]
    assert np.sum(vectors * reference, axis=1).min() >= 0.99
    sizes = [preview.size for preview in batch.previews if preview is not None]
    assert len(sizes) == 6
    # At least the first JPEG found a free slot and was decoded by its thread (full draft size,
    # not a 256 px device preview).
    assert (900, 700) in sizes
    assert set(sizes) <= {(900, 700), (256, 199)}


# -- JPEG completeness and the loader's device path ------------------------------------------


def test_ends_complete() -> None:
    data = jpeg_bytes(make_photo(120, 80, seed=1))
    assert ends_complete(data)
    cut = truncated(data)
    assert cut.startswith(b"\xff\xd8") and not ends_complete(cut)
    assert not ends_complete(data[:-1])
    assert not ends_complete(b"")


def test_orient_matches_exif_transpose() -> None:
    base = torch.arange(2 * 3, dtype=torch.uint8).view(1, 2, 3).expand(3, 2, 3).contiguous()
    image = Image.fromarray(base.permute(1, 2, 0).numpy(), "RGB")
    for orientation in range(1, 9):
        exif = image.getexif()
        exif[0x0112] = orientation
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", exif=exif)
        with Image.open(io.BytesIO(buffer.getvalue())) as opened:
            expected = pil_to_tensor(ImageOps.exif_transpose(opened))
        assert torch.equal(orient(base, orientation), expected), orientation


def _loader(
    tmp_path: Path, catalog: Catalog, clip_encoder: Encoder, *, check: bool = True
) -> tuple[ItemLoader, DataStore]:
    collection = catalog.create_collection(f"c{int(check)}", [clip_encoder.name])
    store = DataStore(tmp_path / "data")
    loader = ItemLoader(
        catalog=catalog,
        collection_id=collection.id,
        store=store,
        settings=IndexerSettings(tmp_path / "data", device_decode_check=check),
        images=DOOR,
        device_decode=True,
    )
    return loader, store


def test_device_loader_sends_truncated_jpegs_to_the_cpu_door(
    tmp_path: Path, catalog: Catalog, clip_encoder: Encoder
) -> None:
    loader, _ = _loader(tmp_path, catalog, clip_encoder)
    data = truncated(jpeg_bytes(make_photo(600, 400, seed=3)), keep=0.6)
    assert not ends_complete(data)
    read_jpeg_header(data, DOOR, check_data=False)  # the header alone looks fine
    path = tmp_path / "cut.jpg"
    path.write_bytes(data)
    with pytest.raises(ImageRejectedError) as raised:
        loader(PathItem(str(path)), 448)
    assert raised.value.code == "corrupt"


def test_device_loader_refuses_a_scan_cut_short_before_the_device_sees_it(
    tmp_path: Path, catalog: Catalog, clip_encoder: Encoder
) -> None:
    """Cut mid-scan with an end marker appended: the markers look whole, and nvJPEG might fill
    the rest grey. The loader reads the data strictly first and refuses it as the CPU door does;
    VIZDEX_DEVICE_DECODE_CHECK=false leaves such files to the device decoder."""
    data = jpeg_bytes(make_photo(600, 400, seed=3))
    cut = data[: len(data) * 3 // 5] + b"\xff\xd9"
    assert ends_complete(cut)
    read_jpeg_header(cut, DOOR, check_data=False)  # the markers alone look fine
    path = tmp_path / "cut.jpg"
    path.write_bytes(cut)
    with pytest.raises(ImageRejectedError) as cpu:
        decode_image_bytes(cut, DOOR)
    loader, _ = _loader(tmp_path, catalog, clip_encoder)
    with pytest.raises(ImageRejectedError) as raised:
        loader(PathItem(str(path)), 448)
    assert (raised.value.code, raised.value.message) == ("corrupt", cpu.value.message)
    unchecked, _ = _loader(tmp_path / "unchecked", catalog, clip_encoder, check=False)
    source, _ = unchecked(PathItem(str(path)), 448)
    assert isinstance(source, JpegBytes) and source.data == cut


def test_device_loader_hands_over_complete_jpegs_with_their_header(
    tmp_path: Path, catalog: Catalog, clip_encoder: Encoder
) -> None:
    loader, store = _loader(tmp_path, catalog, clip_encoder)
    data = jpeg_with_orientation(6, size=(64, 32))
    path = tmp_path / "rotated.jpg"
    path.write_bytes(data)
    source, payload = loader(PathItem(str(path)), 448)
    assert isinstance(source, JpegBytes)
    assert source.data == data
    assert source.orientation == 6
    assert source.pixels == 32 * 64
    assert isinstance(payload, Fresh)
    assert (payload.width, payload.height, payload.format) == (32, 64, "JPEG")
    assert payload.sha256 == hashlib.sha256(data).hexdigest()
    assert payload.thumbnail == store.thumbnail_name(payload.sha256)
    assert payload.thumbnail_data is None and not store.has(payload.thumbnail)
    assert source.fallback().size == (32, 64)  # the CPU door applies the orientation too


def test_cpu_loader_path_is_unchanged_for_truncated_jpegs(
    tmp_path: Path, catalog: Catalog, clip_encoder: Encoder
) -> None:
    collection = catalog.create_collection("c", [clip_encoder.name])
    loader = ItemLoader(
        catalog=catalog,
        collection_id=collection.id,
        store=DataStore(tmp_path / "data"),
        settings=IndexerSettings(tmp_path / "data"),
        images=DOOR,
        device_decode=False,
    )
    path = tmp_path / "cut.jpg"
    path.write_bytes(truncated(jpeg_bytes(make_photo(600, 400, seed=3)), keep=0.6))
    with pytest.raises(ImageRejectedError) as raised:
        loader(PathItem(str(path)), 448)
    assert raised.value.code == "corrupt"


# -- ThumbnailSink -----------------------------------------------------------------------------


def _fresh(key: str, store: DataStore, data: bytes | None = None) -> Fresh:
    sha = hashlib.sha256(key.encode()).hexdigest()
    return Fresh(
        sha256=sha,
        width=400,
        height=300,
        format="JPEG",
        byte_size=1000,
        thumbnail=store.thumbnail_name(sha),
        thumbnail_data=data,
    )


def test_thumbnail_sink_writes_given_made_and_reports_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: list[tuple[int, int]] = []

    def counting(image: Image.Image, *, longest: int = 256, quality: int = 80) -> bytes:
        with lock:
            encoded.append(image.size)
        return make_thumbnail(image, longest=longest, quality=quality)

    lock = threading.Lock()
    monkeypatch.setattr(thumbnail_sink_module, "make_thumbnail", counting)
    store = DataStore(tmp_path / "data")
    given = _fresh("given", store, data=b"RIFF given webp bytes")
    from_preview = _fresh("preview", store)
    tall_preview = _fresh("tall", store)
    nothing = _fresh("nothing", store)
    stored = _fresh("stored", store)
    stored_with_data = _fresh("stored-data", store, data=b"new bytes")
    store.put_files([(stored.thumbnail, b"old"), (stored_with_data.thumbnail, b"old too")])
    payloads: list[Payload] = [
        Unchanged(5),
        given,
        from_preview,
        Known(given.sha256, 3),
        nothing,
        stored,
        tall_preview,
        stored_with_data,
        from_preview,  # the same content twice in one batch: one file
    ]
    picture = make_photo(400, 300, seed=1)
    shown: list[Image.Image | None] = [
        picture,  # ignored: not Fresh
        picture,  # ignored: the bytes are given
        picture,
        picture,
        None,
        picture,
        make_photo(90, 300, seed=2),
        None,
        picture,
    ]
    sink = ThumbnailSink(store, longest=128, quality=80, workers=2)
    with closing(sink):
        missing = sink.write(payloads, shown)
    assert missing == {nothing.thumbnail}
    # Only the two previews without a stored thumbnail were encoded (the repeat was not).
    assert sorted(encoded) == [(90, 300), (400, 300)]
    assert store.resolve(given.thumbnail).read_bytes() == b"RIFF given webp bytes"
    with Image.open(store.resolve(from_preview.thumbnail)) as thumbnail:
        assert (thumbnail.format, thumbnail.size) == ("WEBP", (128, 96))
        mean = np.asarray(thumbnail.convert("RGB"), dtype=np.float64).mean(axis=(0, 1))
    assert np.abs(mean - np.asarray(picture, dtype=np.float64).mean(axis=(0, 1))).max() <= 4.0
    with Image.open(store.resolve(tall_preview.thumbnail)) as thumbnail:
        assert (thumbnail.format, thumbnail.size) == ("WEBP", fit_within(90, 300, 128))
    assert not store.has(nothing.thumbnail)
    assert store.resolve(stored.thumbnail).read_bytes() == b"old"
    assert store.resolve(stored_with_data.thumbnail).read_bytes() == b"old too"
    assert list(store.temp_dir.iterdir()) == []
    written = sorted(path.name for path in (store.root / "thumbs").rglob("*.webp"))
    expected = [given, from_preview, tall_preview, stored, stored_with_data]
    assert written == sorted(Path(payload.thumbnail).name for payload in expected)


def test_thumbnail_sink_with_nothing_fresh_writes_nothing(tmp_path: Path) -> None:
    store = DataStore(tmp_path / "data")
    sink = ThumbnailSink(store, longest=64, quality=80, workers=1)
    with closing(sink):
        assert sink.write([Unchanged(1), Known("ab" * 32, 2)], [None, None]) == set()
        assert sink.write([], []) == set()
    assert not (store.root / "thumbs").exists()


# -- StageClock --------------------------------------------------------------------------------


class ThreadClocks:
    """``perf_counter`` for stage_clock: a timeline per thread that moves only when told to.

    Each thread's stage then lasts exactly what it advanced, so the sums are exact whatever the
    machine's load or the threads' interleaving.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def perf_counter(self) -> float:
        now: float = getattr(self._local, "now", 1000.0)
        return now

    def advance(self, seconds: float) -> None:
        self._local.now = self.perf_counter() + seconds


def test_stage_clock_sums_per_stage_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    clocks = ThreadClocks()
    monkeypatch.setattr(stage_clock, "time", clocks)
    clock = StageClock()
    started = threading.Barrier(4)

    def work(index: int) -> None:
        if index < 4:
            started.wait(timeout=30)  # four threads inside the pool at once: real contention
        with clock.stage("slow"):
            clocks.advance(0.25 * (index + 1))
        with clock.stage("fast"):
            clocks.advance(0.001)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(8)))
    with pytest.raises(RuntimeError), clock.stage("failed"):
        clocks.advance(0.5)
        raise RuntimeError("still counted")
    seconds = clock.seconds()
    assert set(seconds) == {"slow", "fast", "failed"}
    assert seconds["slow"] == pytest.approx(0.25 * sum(range(1, 9)))  # every thread's share
    assert seconds["fast"] == pytest.approx(8 * 0.001)
    assert seconds["failed"] == pytest.approx(0.5)
    assert clock.summary() == "slow 9.00 s, failed 0.50 s, fast 0.01 s"  # largest first
