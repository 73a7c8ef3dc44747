"""Which precision an encoder computes in (``VIZDEX_DTYPE``), and what that does to a model.

``auto`` is float16 on CUDA and, on the CPU, bfloat16 where the processor computes it natively
(AMX-BF16 or AVX512-BF16: there PyTorch's oneDNN matmuls run bfloat16 about twice as fast as
float32), float32 elsewhere (emulated bfloat16 is slower than float32, so it is never a default).
``int8`` is opt-in: the linear layers get int8 weights and per-token dynamic int8 activations.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from vizdex.core.errors import InvalidInputError
from vizdex.core.precision import Precision

log = logging.getLogger(__name__)

# /proc/cpuinfo flags of x86 CPUs whose matrix units compute bfloat16 products natively.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")

_TORCH_DTYPES = {
    Precision.FLOAT32: torch.float32,
    Precision.FLOAT16: torch.float16,
    Precision.BFLOAT16: torch.bfloat16,
    Precision.INT8: torch.float32,  # what runs around the int8 linears
}


@dataclass(frozen=True)
class ResolvedPrecision:
    """The precision chosen and why (``vizdex models --load`` shows the reason)."""

    precision: Precision
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of weights and activations outside int8-quantized linear layers."""
        return _TORCH_DTYPES[self.precision]


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first CPU's feature flags (x86 ``flags``, Arm ``Features``); empty when unreadable."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16_feature(flags: Collection[str]) -> str | None:
    """The flag that makes bfloat16 native on this CPU, or None."""
    return next((flag for flag in NATIVE_BF16_FLAGS if flag in flags), None)


def torch_sees_native_bf16() -> bool:
    """PyTorch's own view (cpuinfo library), for systems without /proc/cpuinfo."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve_precision(
    setting: str, device: torch.device, flags: Collection[str] | None = None
) -> ResolvedPrecision:
    """``VIZDEX_DTYPE`` on ``device``; ``flags`` are the CPU's (read from /proc/cpuinfo if None)."""
    if device.type == "cuda":
        return _resolve_cuda(setting)
    if setting == "auto":
        if flags is None:
            flags = cpu_flags()
        feature = native_bf16_feature(flags)
        if feature is None and not flags and torch_sees_native_bf16():
            feature = "bfloat16 units (PyTorch)"
        if feature is not None:
            return ResolvedPrecision(Precision.BFLOAT16, f"auto: the CPU has {feature}")
        return ResolvedPrecision(Precision.FLOAT32, "auto: the CPU has no native bfloat16")
    if setting == "float16":
        # PyTorch's float16 on a CPU is mostly emulated: slower than float32 and less exact.
        log.warning("dtype float16 is not used on the CPU; running float32")
        return ResolvedPrecision(Precision.FLOAT32, "float16 requested; the CPU runs float32")
    precision = Precision(setting)
    if precision is Precision.BFLOAT16 and native_bf16_feature(flags or cpu_flags()) is None:
        log.warning("bfloat16 is emulated on this CPU (no AMX-BF16 / AVX512-BF16): expect it slow")
    return ResolvedPrecision(precision, f"VIZDEX_DTYPE={setting}")


def _resolve_cuda(setting: str) -> ResolvedPrecision:
    if setting == "auto":
        return ResolvedPrecision(Precision.FLOAT16, "auto: float16 on CUDA")
    if setting == "int8":
        raise InvalidInputError(
            "VIZDEX_DTYPE=int8 is for the CPU (int8 linear layers); on CUDA use auto (float16) "
            "or bfloat16, or set VIZDEX_DEVICE=cpu"
        )
    if setting == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise InvalidInputError("this GPU does not support bfloat16; use float16 or auto")
    return ResolvedPrecision(Precision(setting), f"VIZDEX_DTYPE={setting}")


def apply_precision(
    model: torch.nn.Module, resolved: ResolvedPrecision, int8_parts: Sequence[str] = ()
) -> torch.nn.Module:
    """The model, already in ``resolved.dtype``, with int8 linear layers under ``int8_parts``
    (submodule names; empty: all of them) when int8 is asked for."""
    if resolved.precision is not Precision.INT8:
        return model
    from vizdex.encoders.quantize import quantize_linears

    return quantize_linears(model, int8_parts)
