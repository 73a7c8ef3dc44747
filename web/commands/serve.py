"""``vizdex serve``: the HTTP API on the configured (or flagged) models."""

from __future__ import annotations

import argparse
from dataclasses import replace

from web.commands.options import add_encoder_options, encoder_settings
from web.settings import ServiceSettings


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "serve",
        help="start the HTTP service",
        description="Start the HTTP API. Without flags it uses the VIZDEX_* configuration.",
    )
    parser.add_argument("--host", help="address to bind (default VIZDEX_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default VIZDEX_PORT or 8000)")
    add_encoder_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from web.app import create_app

    settings = ServiceSettings.from_env()
    settings = replace(
        settings,
        host=args.host or settings.host,
        port=args.port or settings.port,
        encoders=encoder_settings(args),
    )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
    return 0
