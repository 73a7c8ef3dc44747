"""``vizdex db upgrade`` / ``vizdex db current``: the catalog schema, managed with Alembic."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from vizdex.search.catalog.session import unopenable
from vizdex.search.db import create_catalog_engine, sqlite_file
from vizdex.search.errors import SchemaMismatchError
from vizdex.search.schema import SchemaState, SchemaStatus, head_revision, schema_status, upgrade
from vizdex.search.settings import CatalogSettings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("db", help="manage the catalog database schema")
    actions = parser.add_subparsers(dest="db_command", metavar="ACTION")
    actions.required = True

    upgrade_parser = actions.add_parser(
        "upgrade", help="apply pending schema migrations (back the database up first)"
    )
    upgrade_parser.add_argument(
        "--revision", default="head", help="target revision (default: the latest, 'head')"
    )
    _database_option(upgrade_parser)
    upgrade_parser.set_defaults(handler=run_upgrade)

    current_parser = actions.add_parser(
        "current", help="show the database's schema revision and the one this vizdex needs"
    )
    _database_option(current_parser)
    current_parser.set_defaults(handler=run_current)


def _database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL (default: VIZDEX_DATABASE_URL, else catalog.db in VIZDEX_DATA_DIR)",
    )


def _database_url(args: argparse.Namespace) -> str:
    url = getattr(args, "database_url", None)
    return str(url) if url else CatalogSettings.from_env().database_url


def _describe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def _reasons(url: str) -> Iterator[None]:
    """A database that cannot be reached or logged into is one line naming the cause."""
    try:
        yield
    except DBAPIError as error:
        raise unopenable(url, error) from error


def run_current(args: argparse.Namespace) -> int:
    """Exit status 0 when the schema is current, 1 when ``vizdex db upgrade`` has work to do."""
    url = _database_url(args)
    database = sqlite_file(url)
    if database is not None and not database.exists():
        # Only a look: opening the engine would create the file and its folder.
        status = SchemaStatus(SchemaState.EMPTY, (), head_revision())
    else:
        engine = create_catalog_engine(url)
        try:
            with _reasons(url):
                status = schema_status(engine)
        finally:
            engine.dispose()
    current = ", ".join(status.current) or "(none)"
    print(f"catalog: {_describe(url)}")
    print(f"revision: {current}")
    print(f"needed:   {status.head}")
    print(f"state:    {status.state.value}")
    return 0 if status.state is SchemaState.CURRENT else 1


def run_upgrade(args: argparse.Namespace) -> int:
    url = _database_url(args)
    engine = create_catalog_engine(url)
    try:
        with _reasons(url):
            before = schema_status(engine)
        if before.state is SchemaState.AHEAD:
            raise SchemaMismatchError(
                f"the catalog has revision {', '.join(before.current)}, unknown to this vizdex "
                "(written by a newer version): upgrade vizdex instead"
            )
        if before.state is SchemaState.UNMANAGED:
            raise SchemaMismatchError(
                f"{_describe(url)} has tables but no vizdex schema revision; refusing to touch it"
            )
        with _reasons(url):
            upgrade(url, args.revision)
            after = schema_status(engine)
    finally:
        engine.dispose()
    was = ", ".join(before.current) or "(empty)"
    now = ", ".join(after.current) or "(empty)"
    if was == now:
        print(f"catalog {_describe(url)} is already at {now}")
    else:
        print(f"catalog {_describe(url)} upgraded: {was} -> {now}")
    return 0
