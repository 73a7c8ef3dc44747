"""An :class:`Encoder` whose model calls go through micro-batching queues.

Request handlers (and the search service they call) use it exactly like the model itself:
``encode_images`` preprocesses in the caller's thread, then the pixel rows join the model's image
queue; ``encode_texts`` joins its text queue. The worker always asks the model for raw vectors
and each caller normalises its own, so requests with and without ``normalize`` share batches.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vizdex.encoders.base import Encoder, WrappedEncoder
from vizdex.encoders.batching import BatchObserver, MicroBatcher, RequestCancelledError
from vizdex.encoders.cancellation import track
from vizdex.encoders.settings import BatchSettings

T = TypeVar("T")

ObserverFactory = Callable[[str, str], BatchObserver]


def _normalized(vectors: np.ndarray) -> np.ndarray:
    # The same operation the encoders use, so batched and direct vectors agree.
    return F.normalize(torch.from_numpy(vectors), dim=-1).numpy()


class BatchedEncoder(WrappedEncoder):
    def __init__(
        self,
        inner: Encoder,
        settings: BatchSettings,
        observers: ObserverFactory | None = None,
    ) -> None:
        super().__init__(inner)
        self.settings = settings
        self._wait_s = 0.0

        def batcher(
            kind: str, run: Callable[[list[Any]], Sequence[np.ndarray]]
        ) -> MicroBatcher[Any, np.ndarray]:
            return MicroBatcher(
                f"{inner.name} ({kind})",
                run,
                max_batch=settings.max_batch,
                max_wait_s=settings.max_wait_ms / 1000.0,
                capacity=settings.queue_size,
                observer=observers(inner.name, kind) if observers else None,
            )

        self.image_queue: MicroBatcher[torch.Tensor, np.ndarray] = batcher(
            "image", self._run_pixels
        )
        self.text_queue: MicroBatcher[str, np.ndarray] | None = (
            batcher("text", self._run_texts) if inner.supports_text else None
        )

    def patient(self, wait_s: float) -> BatchedEncoder:
        """A view on the same queues that waits up to ``wait_s`` for room (bulk requests)."""
        view = object.__new__(BatchedEncoder)
        view.__dict__.update(self.__dict__)
        view._wait_s = wait_s
        return view

    def close(self) -> None:
        self.image_queue.close()
        if self.text_queue is not None:
            self.text_queue.close()

    @property
    def queue_depths(self) -> dict[str, int]:
        depths = {"image": self.image_queue.depth}
        if self.text_queue is not None:
            depths["text"] = self.text_queue.depth
        return depths

    @property
    def logit_scale(self) -> float:
        value = getattr(self.inner, "logit_scale", None)
        if value is None:
            raise AttributeError("logit_scale")  # getattr(encoder, "logit_scale", d) sees d
        return float(value)

    # -- the Encoder interface -----------------------------------------------------------------

    def encode_pixels(self, pixels: torch.Tensor, *, normalize: bool = True) -> np.ndarray:
        return self._finish(self._through(self.image_queue, list(pixels.unbind(0))), normalize)

    def encode_images(self, images: Sequence[Image.Image], *, normalize: bool = True) -> np.ndarray:
        # Preprocess a batch at a time and queue it at once: the model starts on the first chunk
        # while this thread prepares the next.
        size = self.image_queue.max_batch
        futures: list[Future[np.ndarray]] = []
        try:
            for start in range(0, len(images), size):
                rows = list(self.preprocess(images[start : start + size]).unbind(0))
                futures.extend(self._queue(self.image_queue, rows))
            return self._finish(self._wait(futures), normalize)
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    def encode_texts(self, texts: Sequence[str], *, normalize: bool = True) -> np.ndarray:
        if self.text_queue is None:
            return self.inner.encode_texts(texts, normalize=normalize)  # raises CapabilityError
        return self._finish(self._through(self.text_queue, list(texts)), normalize)

    # -- queueing ------------------------------------------------------------------------------

    def _run_pixels(self, rows: list[torch.Tensor]) -> list[np.ndarray]:
        return list(self.inner.encode_pixels(torch.stack(rows), normalize=False))

    def _run_texts(self, texts: list[str]) -> list[np.ndarray]:
        return list(self.inner.encode_texts(texts, normalize=False))

    def _queue(
        self, queue: MicroBatcher[T, np.ndarray], values: list[T]
    ) -> list[Future[np.ndarray]]:
        futures = queue.submit(values, wait_s=self._wait_s)
        track(futures)  # cancels them and raises if the client is already gone
        return futures

    def _through(self, queue: MicroBatcher[T, np.ndarray], values: list[T]) -> list[np.ndarray]:
        futures: list[Future[np.ndarray]] = []
        try:
            for start in range(0, len(values), queue.max_batch):
                futures.extend(self._queue(queue, values[start : start + queue.max_batch]))
            return self._wait(futures)
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    @staticmethod
    def _wait(futures: list[Future[np.ndarray]]) -> list[np.ndarray]:
        try:
            return [future.result() for future in futures]
        except concurrent.futures.CancelledError:
            raise RequestCancelledError("the client disconnected") from None

    def _finish(self, rows: list[np.ndarray], normalize: bool) -> np.ndarray:
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.ascontiguousarray(np.stack(rows), dtype=np.float32)
        return _normalized(vectors) if normalize else vectors


def batched(
    encoders: dict[str, Encoder], settings: BatchSettings, observers: ObserverFactory | None
) -> dict[str, Encoder]:
    """Every encoder behind its queues; unchanged when micro-batching is off."""
    if not settings.enabled:
        return dict(encoders)
    return {
        name: BatchedEncoder(encoder, settings, observers) for name, encoder in encoders.items()
    }
