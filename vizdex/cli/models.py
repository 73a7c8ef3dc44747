"""``vizdex models``: which models are configured, what they are, and whether they load."""

from __future__ import annotations

import argparse
import json

from vizdex.cli.options import add_encoder_options, encoder_settings
from vizdex.encoders.discovery import discover_model
from vizdex.encoders.loading import load_encoder


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "models",
        help="show the configured models",
        description=(
            "Show each configured model's type and kind (vision or multimodal) from its "
            "config.json. With --load, load the weights and report dimension, device, dtype "
            "and the precision in use."
        ),
    )
    add_encoder_options(parser)
    parser.add_argument("--load", action="store_true", help="load weights and run one batch")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = encoder_settings(args)
    rows: list[dict[str, object]] = []
    for model_id in settings.models:
        if args.load:
            encoder = load_encoder(model_id, settings)
            encoder.warmup()
            rows.append(encoder.describe())
        else:
            spec = discover_model(model_id)
            rows.append({"name": model_id, "model_type": spec.model_type, "kind": spec.kind.value})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print("  ".join(f"{key}={value}" for key, value in row.items()))
    return 0
