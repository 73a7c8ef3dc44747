"""Overlap decoding with model work: decode + preprocess in threads, forward in the caller.

Pillow and torchvision release the GIL while decoding and resizing, so a thread pool keeps the
cores busy without pickling pixels across processes. One decode feeds every model of a
collection; each item fails alone with its typed error.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
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

# A loader gets an item and the smallest shortest-side it may draft-decode to (None: full size),
# and returns the RGB image plus whatever the caller wants back with the vectors.
Loader = Callable[[T, int | None], tuple[Image.Image, P]]


@dataclass
class EncodedBatch(Generic[T, P]):
    items: list[T] = field(default_factory=list)
    payloads: list[P] = field(default_factory=list)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # model name -> [n, dim]
    failures: list[tuple[T, VizdexError]] = field(default_factory=list)


def draft_side(encoders: Sequence[Encoder]) -> int | None:
    """The largest side any of the models needs; None if any needs the full image."""
    sides = [encoder.decode_min_side for encoder in encoders]
    return None if any(side is None for side in sides) else max(s for s in sides if s)


def default_workers(configured: int = 0) -> int:
    return configured if configured > 0 else max(1, os.cpu_count() or 1)


def _prepare(
    item: T, load: Loader[T, P], encoders: Sequence[Encoder], min_side: int | None
) -> tuple[P, list[torch.Tensor]]:
    image, payload = load(item, min_side)
    return payload, [encoder.preprocess([image])[0] for encoder in encoders]


def encode_stream(
    items: Iterable[T],
    encoders: Sequence[Encoder],
    load: Loader[T, P],
    *,
    batch_size: int = 64,
    workers: int = 0,
    normalize: bool = True,
) -> Iterator[EncodedBatch[T, P]]:
    """Yield batches of vectors for ``items``, in input order, with per-item failures.

    At most ``batch_size + 2 * workers`` items are decoded ahead of the model, so memory stays
    bounded whatever the length of ``items``.
    """
    min_side = draft_side(encoders)
    threads = default_workers(workers)
    window = batch_size + 2 * threads
    pending: deque[tuple[T, Future[tuple[P, list[torch.Tensor]]]]] = deque()
    batch: EncodedBatch[T, P] = EncodedBatch()
    pixels: list[list[torch.Tensor]] = []
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
                batch.items.append(item)
                batch.payloads.append(payload)
                pixels.append(tensors)
            if len(batch.items) >= batch_size:
                yield _forward(batch, pixels, encoders, normalize)
                batch, pixels = EncodedBatch(), []
        if batch.items or batch.failures:
            yield _forward(batch, pixels, encoders, normalize)


def _forward(
    batch: EncodedBatch[T, P],
    pixels: list[list[torch.Tensor]],
    encoders: Sequence[Encoder],
    normalize: bool,
) -> EncodedBatch[T, P]:
    for index, encoder in enumerate(encoders):
        if pixels:
            stacked = torch.stack([tensors[index] for tensors in pixels])
            batch.vectors[encoder.name] = encoder.encode_pixels(stacked, normalize=normalize)
        else:
            batch.vectors[encoder.name] = np.zeros((0, encoder.dim), dtype=np.float32)
    return batch
