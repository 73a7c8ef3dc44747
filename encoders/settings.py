"""Typed settings for the encoders, read from ``VIZDEX_*`` variables at the entry points."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vizdex.core.env import read_settings, setting
from vizdex.core.errors import InvalidInputError

DEFAULT_MODELS: tuple[str, ...] = ("openai/clip-vit-base-patch32",)
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "float16", "bfloat16", "int8")


@dataclass(frozen=True)
class EncoderSettings:
    """Which models to load and how to run them.

    ``models``: hub ids or local checkpoint directories (``VIZDEX_MODELS``, comma-separated).
    ``device``: ``auto`` picks CUDA when available (``VIZDEX_DEVICE``).
    ``dtype``: the compute precision (``VIZDEX_DTYPE``): ``auto`` is float16 on CUDA, and on the
    CPU bfloat16 where it is native (AMX / AVX512-BF16), else float32; ``int8`` (CPU, opt-in)
    quantizes the linear layers. Vectors are float32 whatever it is (``encoders/precision.py``).
    ``batch_size``: images per forward pass before OOM back-off (``VIZDEX_BATCH_SIZE``).
    ``decode_workers``: threads decoding and preprocessing ahead of the model
    (``VIZDEX_DECODE_WORKERS``, 0 = one per CPU core).
    """

    models: tuple[str, ...] = setting("MODELS", DEFAULT_MODELS)
    device: str = setting("DEVICE", "auto", choices=DEVICES)
    dtype: str = setting("DTYPE", "auto", choices=DTYPES)
    batch_size: int = setting("BATCH_SIZE", 64, minimum=1)
    decode_workers: int = setting("DECODE_WORKERS", 0, minimum=0)
    text_batch_size: int = 256

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise InvalidInputError(f"device must be one of {DEVICES}, not {self.device!r}")
        if self.dtype not in DTYPES:
            raise InvalidInputError(f"dtype must be one of {DTYPES}, not {self.dtype!r}")
        if not self.models:
            raise InvalidInputError("at least one model must be configured (VIZDEX_MODELS)")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EncoderSettings:
        return read_settings(cls, env)


@dataclass(frozen=True)
class BatchSettings:
    """Micro-batching of concurrent encode requests (one queue per model and input kind).

    ``max_batch``: items per model call (``VIZDEX_MAX_BATCH``; 0 turns micro-batching off and
    every request calls the model itself). ``max_wait_ms``: how long the first queued item may
    wait for others to join its batch (``VIZDEX_MAX_WAIT_MS``; none after the model sat idle that
    long). ``queue_size``: items waiting per queue before requests are refused with 429
    (``VIZDEX_QUEUE_SIZE``). ``bulk_wait_s``: how long a bulk request (``/v1/vision/batch``)
    waits for queue room instead of being refused.
    """

    max_batch: int = setting("MAX_BATCH", 32)
    max_wait_ms: float = setting("MAX_WAIT_MS", 5.0)
    queue_size: int = setting("QUEUE_SIZE", 1024)
    bulk_wait_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_batch < 0:
            raise InvalidInputError(f"VIZDEX_MAX_BATCH must be >= 0, got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise InvalidInputError(f"VIZDEX_MAX_WAIT_MS must be >= 0, got {self.max_wait_ms}")
        if self.enabled and self.queue_size < self.max_batch:
            raise InvalidInputError(
                f"VIZDEX_QUEUE_SIZE ({self.queue_size}) must be at least VIZDEX_MAX_BATCH "
                f"({self.max_batch})"
            )

    @property
    def enabled(self) -> bool:
        return self.max_batch > 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BatchSettings:
        return read_settings(cls, env)
