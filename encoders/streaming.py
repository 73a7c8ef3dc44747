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

import os
from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import torch
from PIL import Image

from encoders.base import Encoder
from encoders.errors import VizdexError

T = TypeVar("T")
P = TypeVar("P")


@dataclass(frozen=True)
class JpegBytes:
    """An undecoded JPEG that already passed the door's byte, format and pixel checks.

    ``fallback`` decodes it through the CPU door if the device decoder cannot.
    """

    data: bytes
    fallback: Callable[[], Image.Image]


# A loader gets an item and the smallest shortest-side it may draft-decode to (None: full size),
# and returns the RGB image (or JpegBytes, or None: nothing to encode) plus whatever the caller
# wants back with the vectors.
Loader = Callable[[T, int | None], tuple[Image.Image | JpegBytes | None, P]]
Prepared = list[torch.Tensor] | JpegBytes


@dataclass
class EncodedBatch(Generic[T, P]):
    items: list[T] = field(default_factory=list)
    payloads: list[P] = field(default_factory=list)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # model name -> [n, dim]
    failures: list[tuple[T, VizdexError]] = field(default_factory=list)
    passed: list[tuple[T, P]] = field(default_factory=list)  # loaded, with nothing to encode


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


def _prepare(
    item: T, load: Loader[T, P], encoders: Sequence[Encoder], min_side: int | None
) -> tuple[P, Prepared | None]:
    source, payload = load(item, min_side)
    if source is None or isinstance(source, JpegBytes):
        return payload, source
    return payload, [encoder.preprocess([source])[0] for encoder in encoders]


def encode_stream(
    items: Iterable[T],
    encoders: Sequence[Encoder],
    load: Loader[T, P],
    *,
    batch_size: int = 64,
    workers: int = 0,
    normalize: bool = True,
) -> Generator[EncodedBatch[T, P], None, None]:
    """Yield batches of vectors for ``items``, in input order, with per-item failures.

    At most ``batch_size + 2 * workers`` items are decoded ahead of the model, so memory stays
    bounded whatever the length of ``items``. A batch is also closed once ``4 * batch_size``
    items failed or passed through, so a long run of those never piles up in one batch.
    """
    min_side = draft_side(encoders)
    threads = default_workers(workers)
    window = batch_size + 2 * threads
    pending: deque[tuple[T, Future[tuple[P, Prepared | None]]]] = deque()
    batch: EncodedBatch[T, P] = EncodedBatch()
    pixels: list[Prepared] = []
    source = iter(items)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vizdex-decode") as pool:

        def refill() -> None:
            while len(pending) < window:
                try:
                    item = next(source)
                except StopIteration:
                    return
                pending.append((item, pool.submit(_prepare, item, load, encoders, min_side)))

        refill()
        while pending:
            item, future = pending.popleft()
            refill()
            try:
                payload, tensors = future.result()
            except VizdexError as error:
                batch.failures.append((item, error))
            else:
                if tensors is None:
                    batch.passed.append((item, payload))
                else:
                    batch.items.append(item)
                    batch.payloads.append(payload)
                    pixels.append(tensors)
            if (
                len(batch.items) >= batch_size
                or len(batch.failures) + len(batch.passed) >= 4 * batch_size
            ):
                yield _forward(batch, pixels, encoders, normalize)
                batch, pixels = EncodedBatch(), []
        if batch.items or batch.failures or batch.passed:
            yield _forward(batch, pixels, encoders, normalize)


def _device_pixels(
    jpegs: list[JpegBytes], encoders: Sequence[Encoder]
) -> list[Prepared | VizdexError]:
    """Decode on the models' device; per-image CPU fallback; a refusal becomes that item's error."""
    from encoders.device_jpeg import decode_jpegs
    from encoders.preprocess import preprocess_tensor

    device = encoders[0].device
    results: list[Prepared | VizdexError] = []
    for jpeg, tensor in zip(jpegs, decode_jpegs([j.data for j in jpegs], device), strict=True):
        if tensor is None:
            try:
                results.append([encoder.preprocess([jpeg.fallback()])[0] for encoder in encoders])
            except VizdexError as error:
                results.append(error)
            continue
        specs = [encoder.preprocess_spec for encoder in encoders]
        if any(spec is None for spec in specs):
            raise ValueError("device decoding needs every model's preprocessing spec")
        results.append([preprocess_tensor(tensor, spec) for spec in specs if spec is not None])
    return results


def _forward(
    batch: EncodedBatch[T, P],
    pixels: list[Prepared],
    encoders: Sequence[Encoder],
    normalize: bool,
) -> EncodedBatch[T, P]:
    jpeg_at = [i for i, entry in enumerate(pixels) if isinstance(entry, JpegBytes)]
    if jpeg_at:
        decoded = _device_pixels([pixels[i] for i in jpeg_at], encoders)  # type: ignore[misc]
        failed: set[int] = set()
        for index, result in zip(jpeg_at, decoded, strict=True):
            if isinstance(result, VizdexError):
                batch.failures.append((batch.items[index], result))
                failed.add(index)
            else:
                pixels[index] = result
        if failed:
            keep = [i for i in range(len(pixels)) if i not in failed]
            batch.items = [batch.items[i] for i in keep]
            batch.payloads = [batch.payloads[i] for i in keep]
            pixels = [pixels[i] for i in keep]
    ready: list[list[torch.Tensor]] = [p for p in pixels if not isinstance(p, JpegBytes)]
    for index, encoder in enumerate(encoders):
        if ready:
            stacked = torch.stack([tensors[index].to(encoder.device) for tensors in ready])
            batch.vectors[encoder.name] = encoder.encode_pixels(stacked, normalize=normalize)
        else:
            batch.vectors[encoder.name] = np.zeros((0, encoder.dim), dtype=np.float32)
    return batch
