"""``vizdex serve``: the HTTP API on the configured (or flagged) models."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from vizdex.cli.options import (
    add_encoder_options,
    check_models,
    encoder_settings,
    quiet_model_loading,
)
from vizdex.core.errors import InvalidInputError, UnavailableError
from vizdex.encoders.loading import load_encoders
from vizdex.search import Catalog, IndexBackend
from vizdex.search.db import is_sqlite
from vizdex.search.settings import replica_index_dir

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
    settings = replace(
        settings,
        host=args.host or settings.host,
        port=settings.port if args.port is None else args.port,
        encoders=encoder_settings(args),
    )
    return with_replica_indexes(settings, os.environ)


def with_replica_indexes(settings: ServiceSettings, env: Mapping[str, str]) -> ServiceSettings:
    """On a PostgreSQL catalog (replicas), each server keeps its indexes in a folder of its own:
    ``indexes/replica-<VIZDEX_REPLICA_ID>``, by default ``<host name>-<port>``, stable across
    restarts so a restarted replica finds its snapshots. ``VIZDEX_INDEX_DIR`` wins over both."""
    named = any(env.get(f"VIZDEX_{name}", "").strip() for name in ("INDEX_DIR", "REPLICA_ID"))
    if named or is_sqlite(settings.search.catalog.database_url):
        return settings
    replica = f"{socket.gethostname()}-{settings.port}"
    directory = replica_index_dir(settings.indexer.data_dir, replica)
    index = replace(settings.search.index, directory=directory)
    return replace(settings, search=replace(settings.search, index=index))


def check_catalog(settings: ServiceSettings) -> None:
    """Open the catalog once before loading models: a fresh data directory gets its schema
    created; an out-of-date or foreign database stops here with the reason (and the fix), as
    one line from the CLI instead of a traceback from inside the server. A catalog that can be
    read but not written stops here too: the server would refuse every write."""
    catalog = Catalog.open(settings.search.catalog)
    try:
        catalog.check_writable()
    finally:
        catalog.close()


def check_data_dir(settings: ServiceSettings) -> None:
    """The data directory's folders, made now: what stands where a scratch one belongs is moved
    aside, and one that cannot be made (e.g. ``originals`` a broken link) ends the command in
    one line, not the server's start in a traceback."""
    from vizdex.indexer.storage import DataStore

    DataStore(settings.data_dir).prepare()


def check_port(host: str, port: int) -> None:
    """Bind once before the slow start, so a taken port is one line now, not a traceback later."""
    if not 0 <= port <= 65535:  # getaddrinfo would wrap 70000 round to 4464
        raise InvalidInputError(f"the port must be between 0 and 65535, not {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise InvalidInputError(f"cannot listen on {host!r}: {error.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            hint = (
                " (another server on that port? choose one with --port or VIZDEX_PORT)"
                if error.errno == errno.EADDRINUSE
                else " (is that address one of this machine's? see --host or VIZDEX_HOST)"
            )
            raise UnavailableError(
                f"cannot listen on {host}:{port}: {error.strerror}{hint}"
            ) from None


def server_options(settings: ServiceSettings) -> dict[str, Any]:
    """uvicorn's options for ``vizdex serve``; the tests' live server starts from them too, so a
    limit set here is the limit the tests exercise."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": "info",
        # Beyond this many open connections uvicorn answers 503 before reading any body.
        "limit_concurrency": settings.limits.connections,
        "timeout_graceful_shutdown": 30,
    }


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from vizdex.web.app import create_app

    settings = settings_from(args)
    # Everything a first start can trip over, checked before the server starts, so that each
    # ends the command with its one-line reason: the models (config only), the index device,
    # the port, the data directory and catalog; then the weights themselves.
    check_models(settings.encoders.models)
    IndexBackend.check(settings.search.index.device)
    check_port(settings.host, settings.port)
    check_catalog(settings)
    check_data_dir(settings)
    # A server's progress (models loaded, indexes rebuilt) is worth seeing; the CLI default hides
    # everything below warnings.
    logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
    quiet_model_loading(args)
    encoders = load_encoders(settings.encoders)
    uvicorn.run(create_app(settings, encoders=encoders), **server_options(settings))
    return 0
