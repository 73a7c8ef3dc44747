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

import torch
from torch import nn

from vizdex.core.errors import InvalidInputError


def quantize_linears(model: nn.Module) -> nn.Module:
    """``model`` (float32, in eval mode) with its linear layers in int8, changed in place."""
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as error:  # a torch that dropped the eager int8 path
        raise InvalidInputError(
            f"VIZDEX_DTYPE=int8 needs torch.ao.quantization.quantize_dynamic, which torch "
            f"{torch.__version__} lacks; use VIZDEX_DTYPE=bfloat16 or float32"
        ) from error
    with warnings.catch_warnings():
        # The deprecation notice of torch.quantize_per_tensor: said once in our docs instead.
        warnings.simplefilter("ignore", UserWarning)
        quantized: nn.Module = quantize_dynamic(  # type: ignore[no-untyped-call]
            model, {nn.Linear}, dtype=torch.qint8, inplace=True
        )
    return quantized
