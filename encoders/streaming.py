"""Overlap decoding with model work: decode + preprocess in threads, forward in the caller.

Pillow and torchvision release the GIL while decoding and resizing, so a thread pool keeps the
cores busy without pickling pixels across processes. One decode feeds every model of a
collection; each item fails alone with its typed error.

A loader may hand back :class:`JpegBytes` instead of a decoded image: those are decoded in a
batch on the models' device (nvJPEG on CUDA) and preprocessed there, falling back to the CPU
door for any image the device decoder refuses. It may also hand back ``None``: the item has
nothing to encode (e.g. it is already indexed) and comes out in its batch's ``passed`` list, so one
stream can carry a whole rescan without a second pool.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import torch
from PIL import Image

from vizdex.core.errors import ImageRejectedError, VizdexError
from vizdex.core.stage_clock import StageClock
from vizdex.encoders.base import Encoder
from vizdex.encoders.preprocess import preprocess_batch, previews

log = logging.getLogger(__name__)

T = TypeVar("T")
P = TypeVar("P")


@dataclass(frozen=True)
class JpegBytes:
    """An undecoded JPEG that already passed the door's byte, format and pixel checks.

    ``fallback`` decodes it through the CPU door if the device decoder cannot; ``orientation``
    and ``pixels`` come from its header (``encoders.device_jpeg.read_jpeg_header``).
    """

    data: bytes
    fallback: Callable[[], Image.Image]
    orientation: int = 1
    pixels: int = 0


# A loader gets an item and the smallest shortest-side it may draft-decode to (None: full size),
# and returns the RGB image (or JpegBytes, or None: nothing to encode) plus whatever the caller
# wants back with the vectors.
Loader = Callable[[T, int | None], tuple[Image.Image | JpegBytes | None, P]]
Pixels = list[torch.Tensor]  # one model input per encoder
Prepared = Pixels | JpegBytes
DEVICE_CHUNK = 64  # JPEGs decoded on the device at a time, as they arrive


@dataclass
class EncodedBatch(Generic[T, P]):
    items: list[T] = field(default_factory=list)
    payloads: list[P] = field(default_factory=list)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # model name -> [n, dim]
    failures: list[tuple[T, VizdexError]] = field(default_factory=list)
    passed: list[tuple[T, P]] = field(default_factory=list)  # loaded, with nothing to encode
    # Per item: a small copy of the pixels for items whose decode the loader never saw (JPEGs
    # handed over as JpegBytes), so the caller can still make a thumbnail; None for the others.
    previews: list[Image.Image | None] = field(default_factory=list)


def draft_side(encoders: Sequence[Encoder]) -> int | None:
    """The largest side any of the models needs; None if any needs the full image."""
    sides = [encoder.decode_min_side for encoder in encoders]
    return None if any(side is None for side in sides) else max(s for s in sides if s)


def default_workers(configured: int = 0) -> int:
    return configured if configured > 0 else max(1, os.cpu_count() or 1)


def device_decode_possible(encoders: Sequence[Encoder]) -> bool:
    """True when every model runs on one CUDA device and has reproducible preprocessing."""
    devices = {encoder.device for encoder in encoders}
    return (
        len(devices) == 1
        and next(iter(devices)).type == "cuda"
        and all(encoder.preprocess_spec is not None for encoder in encoders)
    )


class CpuAssist:
    """Lets decode threads take large JPEGs off a device decoder that has fallen behind.

    nvJPEG decodes a 12 MP photo at full size, while a CPU draft decode (DCT scaling) does a
    fraction of that work; when JPEGs queue up for the device, idle decode threads decode some
    themselves. Only images big enough for draft decoding to pay qualify, and at most ``slots``
    CPU decodes run at once, so the threads stay free to read and hash ahead of the device.
    """

    def __init__(self, slots: int, backlog: int, min_pixels: int) -> None:
        self._slots = threading.Semaphore(slots)
        self._backlog = backlog
        self._min_pixels = min_pixels
        self._lock = threading.Lock()
        self.waiting = 0  # JPEGs handed over for the device and not yet decoded there

    def queued(self, count: int) -> None:
        with self._lock:
            self.waiting += count

    def take(self, jpeg: JpegBytes) -> bool:
        if jpeg.pixels < self._min_pixels or self.waiting < self._backlog:
            return False
        return self._slots.acquire(blocking=False)

    def release(self) -> None:
        self._slots.release()


def _cpu_pixels(image: Image.Image, encoders: Sequence[Encoder]) -> Pixels:
    try:
        return [encoder.preprocess([image])[0] for encoder in encoders]
    except VizdexError:
        raise
    except Exception as error:  # one image's failure (even MemoryError) must not end the job
        log.exception("preparing a %d×%d image for the model failed", *image.size)
        raise ImageRejectedError(
            f"the image could not be prepared for the model ({type(error).__name__})",
            code="unprocessable",
        ) from error


def _prepare(
    item: T,
    load: Loader[T, P],
    encoders: Sequence[Encoder],
    min_side: int | None,
    assist: CpuAssist | None,
) -> tuple[P, Prepared | None, Image.Image | None]:
    source, payload = load(item, min_side)
    if source is None:
        return payload, None, None
    if isinstance(source, JpegBytes):
        if assist is None or not assist.take(source):
            if assist is not None:
                assist.queued(1)
            return payload, source, None
        try:
            image = source.fallback()
        finally:
            assist.release()
        return payload, _cpu_pixels(image, encoders), image
    return payload, _cpu_pixels(source, encoders), None


def encode_stream(
    items: Iterable[T],
    encoders: Sequence[Encoder],
    load: Loader[T, P],
    *,
    batch_size: int = 64,
    workers: int = 0,
    normalize: bool = True,
    preview_side: int = 256,
    clock: StageClock | None = None,
    min_batch: int | None = None,
) -> Generator[EncodedBatch[T, P], None, None]:
    """Yield batches of vectors for ``items``, in input order, with per-item failures.

    At most ``batch_size + 2 * workers`` items are decoded ahead of the model, so memory stays
    bounded whatever the length of ``items``. A batch is also closed once ``4 * batch_size``
    items failed or passed through, so a long run of those never piles up in one batch.
    JpegBytes are decoded on the device ``DEVICE_CHUNK`` at a time as they come in, so device
    decoding overlaps the decode threads instead of waiting for a whole batch; their previews
    fit within ``preview_side``. ``clock`` gets the caller's thread's time per stage.

    ``batch_size`` is the most a batch holds: when the next item is not decoded yet and at least
    ``min_batch`` (default a quarter of ``batch_size``) are ready, those go to the model at once
    rather than leaving it idle, so the first forward starts after a few decodes, not a whole
    batch of them. ``min_batch=batch_size`` keeps every batch but the last full.
    """
    clock = clock or StageClock()
    eager = max(1, batch_size // 4) if min_batch is None else max(1, min_batch)
    min_side = draft_side(encoders)
    threads = default_workers(workers)
    window = batch_size + 2 * threads
    assist = None
    if min_side is not None:
        assist = CpuAssist(max(1, threads // 2), 2 * DEVICE_CHUNK, 4 * min_side * min_side)
    pending: deque[tuple[T, Future[tuple[P, Prepared | None, Image.Image | None]]]] = deque()
    state = _BatchState[T, P]()
    source = iter(items)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vizdex-decode") as pool:

        def refill() -> None:
            while len(pending) < window:
                try:
                    item = next(source)
                except StopIteration:
                    return
                job = pool.submit(_prepare, item, load, encoders, min_side, assist)
                pending.append((item, job))

        refill()
        while pending:
            item, future = pending.popleft()
            if not future.done() and state.on_device:  # use the wait: feed the device first
                with clock.stage("device decode"):
                    state.decode_on_device(encoders, preview_side, assist)
            if not future.done() and len(state.batch.items) >= eager:
                # The model would idle until the next item is decoded: give it what is ready.
                yield state.finish(encoders, normalize, preview_side, assist, clock)
                state = _BatchState()
            refill()  # after any early batch, so the window bound holds with this item in hand
            if not future.done():
                with clock.stage("waiting for decode threads"):
                    wait([future])
            try:
                payload, prepared, preview = future.result()
            except VizdexError as error:
                state.batch.failures.append((item, error))
            else:
                if prepared is None:
                    state.batch.passed.append((item, payload))
                else:
                    state.add(item, payload, prepared, preview)
            if len(state.on_device) >= DEVICE_CHUNK:
                with clock.stage("device decode"):
                    state.decode_on_device(encoders, preview_side, assist)
            batch = state.batch
            if (
                len(batch.items) >= batch_size
                or len(batch.failures) + len(batch.passed) >= 4 * batch_size
            ):
                yield state.finish(encoders, normalize, preview_side, assist, clock)
                state = _BatchState()
        if state.batch.items or state.batch.failures or state.batch.passed:
            yield state.finish(encoders, normalize, preview_side, assist, clock)


class _BatchState(Generic[T, P]):
    """The batch being filled: its items' model inputs, and which still await the device."""

    def __init__(self) -> None:
        self.batch: EncodedBatch[T, P] = EncodedBatch()
        self.pixels: list[Prepared | VizdexError] = []
        self.on_device: list[int] = []  # positions whose pixels are still JpegBytes

    def add(self, item: T, payload: P, prepared: Prepared, preview: Image.Image | None) -> None:
        if isinstance(prepared, JpegBytes):
            self.on_device.append(len(self.pixels))
        self.batch.items.append(item)
        self.batch.payloads.append(payload)
        self.batch.previews.append(preview)
        self.pixels.append(prepared)

    def decode_on_device(
        self, encoders: Sequence[Encoder], preview_side: int, assist: CpuAssist | None
    ) -> None:
        at, self.on_device = self.on_device, []
        if not at:
            return
        jpegs = [self.pixels[index] for index in at]
        results = _device_pixels(jpegs, encoders, preview_side)  # type: ignore[arg-type]
        if assist is not None:
            assist.queued(-len(at))
        for index, result in zip(at, results, strict=True):
            if isinstance(result, VizdexError):
                self.pixels[index] = result
            else:
                self.pixels[index], self.batch.previews[index] = result

    def finish(
        self,
        encoders: Sequence[Encoder],
        normalize: bool,
        preview_side: int,
        assist: CpuAssist | None,
        clock: StageClock,
    ) -> EncodedBatch[T, P]:
        with clock.stage("device decode"):
            self.decode_on_device(encoders, preview_side, assist)
        batch = self.batch
        failed = {i for i, p in enumerate(self.pixels) if isinstance(p, VizdexError)}
        for index in sorted(failed):
            error = self.pixels[index]
            assert isinstance(error, VizdexError)
            batch.failures.append((batch.items[index], error))
        if failed:
            keep = [i for i in range(len(self.pixels)) if i not in failed]
            batch.items = [batch.items[i] for i in keep]
            batch.payloads = [batch.payloads[i] for i in keep]
            batch.previews = [batch.previews[i] for i in keep]
            self.pixels = [self.pixels[i] for i in keep]
        ready = [p for p in self.pixels if isinstance(p, list)]
        for index, encoder in enumerate(encoders):
            if not ready:
                batch.vectors[encoder.name] = np.zeros((0, encoder.dim), dtype=np.float32)
                continue
            with clock.stage("model forward"):
                stacked = torch.stack([pixels[index].to(encoder.device) for pixels in ready])
                batch.vectors[encoder.name] = encoder.encode_pixels(stacked, normalize=normalize)
        return batch


def _device_pixels(
    jpegs: list[JpegBytes], encoders: Sequence[Encoder], preview_side: int
) -> list[tuple[Pixels, Image.Image] | VizdexError]:
    """Decode on the models' device, preprocess in batches there, and make small previews.

    An image the device decoder refuses goes through the CPU door; a refusal there becomes that
    item's error.
    """
    from vizdex.encoders.device_jpeg import decode_jpegs

    specs = [encoder.preprocess_spec for encoder in encoders]
    if any(spec is None for spec in specs):
        raise ValueError("device decoding needs every model's preprocessing spec")
    decoded = decode_jpegs(
        [jpeg.data for jpeg in jpegs], encoders[0].device, [jpeg.orientation for jpeg in jpegs]
    )
    results: list[tuple[Pixels, Image.Image] | VizdexError | None] = [None] * len(jpegs)
    for index, (jpeg, tensor) in enumerate(zip(jpegs, decoded, strict=True)):
        if tensor is None:
            try:
                image = jpeg.fallback()
                results[index] = (_cpu_pixels(image, encoders), image)
            except VizdexError as error:
                results[index] = error
    at = [index for index, tensor in enumerate(decoded) if tensor is not None]
    tensors = [tensor for tensor in decoded if tensor is not None]
    per_model = [preprocess_batch(tensors, spec, draft=True) for spec in specs if spec is not None]
    small = previews(tensors, preview_side)
    for position, index in enumerate(at):
        results[index] = ([pixels[position] for pixels in per_model], small[position])
    return [result for result in results if result is not None]
