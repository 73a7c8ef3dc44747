"""``vizdex serve``: the HTTP API on the configured (or flagged) models."""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from vizdex.cli.options import add_encoder_options, encoder_settings
from vizdex.search import Catalog

if TYPE_CHECKING:
    from vizdex.web.settings import ServiceSettings


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


def settings_from(args: argparse.Namespace) -> ServiceSettings:
    from vizdex.web.settings import ServiceSettings

    settings = ServiceSettings.from_env()
    return replace(
        settings,
        host=args.host or settings.host,
        port=args.port or settings.port,
        encoders=encoder_settings(args),
    )


def check_catalog(settings: ServiceSettings) -> None:
    """Open the catalog once before loading models: a fresh data directory gets its schema
    created; an out-of-date or foreign database stops here with the reason (and the fix), as
    one line from the CLI instead of a traceback from inside the server."""
    Catalog.open(settings.search.catalog).close()


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from vizdex.web.app import create_app

    settings = settings_from(args)
    check_catalog(settings)
    # A server's progress (models loaded, indexes rebuilt) is worth seeing; the CLI default hides
    # everything below warnings.
    logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        # Beyond this many open connections uvicorn answers 503 before reading any body.
        limit_concurrency=settings.limits.connections,
        timeout_graceful_shutdown=30,
    )
    return 0
