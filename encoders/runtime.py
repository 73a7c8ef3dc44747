"""Device choice, and batched execution that survives running out of memory."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from vizdex.core.errors import EncoderOutOfMemoryError, InvalidInputError

log = logging.getLogger(__name__)


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(
            "VIZDEX_DEVICE=cuda but PyTorch sees no CUDA device; use auto or cpu, or install a "
            "CUDA build of torch"
        )
    return torch.device(setting)


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    # The CPU allocator reports exhaustion as a plain RuntimeError.
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)


def _release_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


class BatchRunner:
    """Runs a function over slices of a batch; on OOM halves the slice size down to 1.

    The reduced size is kept for later calls so a device that is short on memory is not made to
    fail at the full size again and again. Only a single-item OOM raises, as a typed error.
    """

    def __init__(self, batch_size: int, device: torch.device, name: str) -> None:
        if batch_size < 1:
            raise InvalidInputError("batch size must be at least 1")
        self.batch_size = batch_size
        self.device = device
        self.name = name

    def run(self, total: int, step: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
        """``step(start, stop)`` returns outputs for items ``start:stop``; they are concatenated."""
        outputs: list[torch.Tensor] = []
        start = 0
        while start < total:
            stop = min(total, start + self.batch_size)
            try:
                outputs.append(step(start, stop))
            except (torch.OutOfMemoryError, RuntimeError) as error:
                if not is_out_of_memory(error):
                    raise
                _release_cached_memory(self.device)
                if stop - start == 1:
                    raise EncoderOutOfMemoryError(
                        f"model {self.name!r} ran out of memory on a single item on {self.device}; "
                        "free memory on the device or use a smaller model",
                        model=self.name,
                    ) from error
                self.batch_size = max(1, (stop - start) // 2)
                log.warning(
                    "%s: out of memory at batch %d, retrying at %d",
                    self.name,
                    stop - start,
                    self.batch_size,
                )
                continue
            start = stop
        return torch.cat(outputs) if outputs else torch.empty(0)
