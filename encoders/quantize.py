"""int8 linear layers (``VIZDEX_DTYPE=int8``): int8 weights, activations quantized per batch.

Every ``nn.Linear`` (attention, MLP, projections; the fused CLIP layers are plain linears too)
becomes PyTorch's dynamic int8 linear (fbgemm / oneDNN VNNI kernels); embeddings, convolutions
and layer norms stay float32.

Why ``torch.ao.quantization.quantize_dynamic`` and not torchao's
``Int8DynamicActivationInt8WeightConfig``: measured on a ViT-B/32-shaped CLIP here (README,
"CPU precisions"), torchao in eager mode ran ~3x *slower* than float32 on the CPU (its int8
matmul wants ``torch.compile``, minutes of start-up on a small machine), while
``quantize_dynamic`` is faster than float32, ships inside torch (no extra to install) and stays
within cosine 0.999 of float32 there. PyTorch marks the quantized-tensor functions under it as
deprecated; when a release drops them, int8 fails at load with the message below instead of
running something else.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vizdex.core.errors import InvalidInputError


def quantize_linears(model: nn.Module, parts: Sequence[str] = ()) -> nn.Module:
    """``model`` (float32, in eval mode) with the linear layers under ``parts`` (submodule
    names; empty: the whole model) in int8, changed in place.

    Weights get one scale per output channel; activations one scale per call (PyTorch's dynamic
    linear has no per-token scales).
    """
    try:
        import torch.ao.nn.quantized.dynamic as dynamic
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as error:  # a torch that dropped the eager int8 path
        raise InvalidInputError(
            f"VIZDEX_DTYPE=int8 needs torch.ao.quantization.quantize_dynamic, which torch "
            f"{torch.__version__} lacks; use VIZDEX_DTYPE=bfloat16 or float32"
        ) from error
    where: dict[Any, Any] = (
        {name: per_channel_dynamic_qconfig for name in parts}
        if parts
        else {nn.Linear: per_channel_dynamic_qconfig}
    )
    with warnings.catch_warnings():
        # torch.ao.quantization's deprecation notices, on every load: the README says it once.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        # Linear only: by name, the default mapping would also take embeddings (and refuse them).
        quantized: nn.Module = quantize_dynamic(  # type: ignore[no-untyped-call]
            model, where, mapping={nn.Linear: dynamic.Linear}, inplace=True
        )
    return quantized
