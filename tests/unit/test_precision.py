"""VIZDEX_DTYPE: which precision each device and CPU gets, and which precisions may share a
collection."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vizdex.core.errors import InvalidInputError
from vizdex.core.precision import (
    MIX_TOLERANCE,
    PARITY_FLOOR,
    Precision,
    can_mix,
    clashes,
    worst_cosine,
)
from vizdex.encoders.precision import cpu_flags, native_bf16_feature, resolve_precision

CPU = torch.device("cpu")
SAPPHIRE_RAPIDS = {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8", "avx512_vnni"}
ZEN4 = {"avx512f", "avx512_bf16", "avx512_vnni"}
SKYLAKE = {"avx512f", "avx2", "fma"}


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_bf16\n\nprocessor\t: 1\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert cpu_flags(x86) == {"fpu", "avx512f", "amx_bf16"}
    assert cpu_flags(arm) == {"fp", "asimd", "bf16", "i8mm"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (SAPPHIRE_RAPIDS, "amx_bf16"),
        (ZEN4, "avx512_bf16"),
        (SKYLAKE, None),
        ({"fp", "asimd", "bf16"}, None),  # Arm's bf16 is not measured here: float32 stays
    ],
)
def test_native_bfloat16_is_detected_from_the_flags(flags: set[str], expected: str | None) -> None:
    assert native_bf16_feature(flags) == expected


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (SAPPHIRE_RAPIDS, Precision.BFLOAT16),
        (ZEN4, Precision.BFLOAT16),
        (SKYLAKE, Precision.FLOAT32),
    ],
)
def test_auto_on_the_cpu_follows_the_hardware(flags: set[str], expected: Precision) -> None:
    resolved = resolve_precision("auto", CPU, flags)
    assert resolved.precision is expected
    assert resolved.reason.startswith("auto:")
    assert resolved.dtype == {Precision.BFLOAT16: torch.bfloat16}.get(expected, torch.float32)


@pytest.mark.parametrize("flags", [SAPPHIRE_RAPIDS, SKYLAKE])
def test_explicit_cpu_choices_win_over_the_hardware(flags: set[str]) -> None:
    assert resolve_precision("float32", CPU, flags).precision is Precision.FLOAT32
    assert resolve_precision("bfloat16", CPU, flags).precision is Precision.BFLOAT16
    int8 = resolve_precision("int8", CPU, flags)
    assert int8.precision is Precision.INT8 and int8.dtype == torch.float32
    # float16 on a CPU is mostly emulated: it runs float32, and says so.
    assert resolve_precision("float16", CPU, flags).precision is Precision.FLOAT32


def test_cuda_defaults_to_float16_and_refuses_int8() -> None:
    cuda = torch.device("cuda")  # a device object; nothing runs on it
    assert resolve_precision("auto", cuda).precision is Precision.FLOAT16
    with pytest.raises(InvalidInputError, match="int8 is for the CPU"):
        resolve_precision("int8", cuda)


def test_half_precisions_mix_with_float32_and_int8_only_with_itself() -> None:
    assert can_mix(Precision.FLOAT32, Precision.BFLOAT16)
    assert can_mix(Precision.BFLOAT16, Precision.FLOAT16)
    assert can_mix(Precision.INT8, Precision.INT8)
    assert not can_mix(Precision.INT8, Precision.FLOAT32)
    assert not can_mix(Precision.BFLOAT16, Precision.INT8)
    # The bound is the angles to float32 added: bf16 vs fp16 sits just above the tolerance.
    assert worst_cosine(Precision.FLOAT32, Precision.INT8) == pytest.approx(
        PARITY_FLOOR[Precision.INT8]
    )
    assert MIX_TOLERANCE < worst_cosine(Precision.BFLOAT16, Precision.FLOAT16) < 0.997


def test_clashes_name_what_a_new_precision_cannot_join() -> None:
    assert clashes(["float32", "bfloat16"], Precision.FLOAT16) == []
    assert clashes(["float32", "bfloat16"], Precision.INT8) == ["float32", "bfloat16"]
    assert clashes(["int8"], Precision.FLOAT32) == ["int8"]
    # A precision this vizdex does not know (a newer one wrote it) is never mixed blindly.
    assert clashes(["float8"], Precision.FLOAT32) == ["float8"]
