"""CLI flags that mirror ``VIZDEX_*`` variables: a flag wins over the environment."""

from __future__ import annotations

import argparse
from dataclasses import replace

from vizdex.encoders.settings import DEVICES, DTYPES, EncoderSettings


def add_encoder_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models (defaults: VIZDEX_MODELS, _DEVICE, _DTYPE)")
    group.add_argument(
        "--model",
        dest="models",
        action="append",
        metavar="ID_OR_DIR",
        help="Hugging Face id or local checkpoint directory; repeat for several",
    )
    group.add_argument("--device", choices=DEVICES, help="where models run")
    group.add_argument("--dtype", choices=DTYPES, help="precision on CUDA (the CPU uses float32)")
    group.add_argument("--batch-size", type=int, help="images per forward pass")


def encoder_settings(args: argparse.Namespace) -> EncoderSettings:
    settings = EncoderSettings.from_env()
    overrides: dict[str, object] = {}
    if args.models:
        overrides["models"] = tuple(m for value in args.models for m in value.split(",") if m)
    for name in ("device", "dtype", "batch_size"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return replace(settings, **overrides)  # type: ignore[arg-type]
