"""Is the catalog's schema the one this code expects? Alembic revisions answer, and upgrade.

The migration scripts are found from the installed ``vizdex.migrations`` package (never the current
directory), without importing it: this module must not depend on ``migrations``, only find it.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import URL, Connection, make_url

from vizdex.core.errors import UnavailableError
from vizdex.search.db import create_catalog_engine, is_sqlite
from vizdex.search.errors import SchemaMismatchError, SchemaOutOfDateError

log = logging.getLogger(__name__)

VERSION_TABLE = "alembic_version"
# PostgreSQL advisory lock key held while migrating (any constant, the same in every vizdex).
MIGRATION_LOCK = 0x76697A646578  # "vizdex"


class SchemaState(StrEnum):
    CURRENT = "current"
    EMPTY = "empty"  # nothing there yet: creating the schema loses nothing
    BEHIND = "behind"  # needs `vizdex db upgrade`
    AHEAD = "ahead"  # a revision this code does not know (a newer vizdex wrote it)
    UNMANAGED = "unmanaged"  # tables, but no revision: not a vizdex catalog


@dataclass(frozen=True)
class SchemaStatus:
    state: SchemaState
    current: tuple[str, ...]
    head: str


def migrations_directory() -> Path:
    spec = importlib.util.find_spec("vizdex.migrations")
    if spec is None or not spec.submodule_search_locations:
        raise UnavailableError("the vizdex `migrations` package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _url_string(url: str | URL) -> str:
    return make_url(url).render_as_string(hide_password=False)


def alembic_config(
    url: str | URL,
    *,
    script_location: Path | None = None,
    connection: Connection | None = None,
) -> Config:
    """A programmatic Alembic config: works from an installed package, no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", str(script_location or migrations_directory()))
    config.set_main_option("path_separator", "os")
    # ConfigParser interpolates '%': URL-encoded passwords must be escaped.
    config.set_main_option("sqlalchemy.url", _url_string(url).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _scripts(script_location: Path | None) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://", script_location=script_location))


def head_revision(script_location: Path | None = None) -> str:
    script = _scripts(script_location)
    heads = script.get_heads()
    if len(heads) != 1:
        raise UnavailableError(f"the migration scripts have {len(heads)} heads; expected one")
    return heads[0]


def schema_status(engine: Engine, *, script_location: Path | None = None) -> SchemaStatus:
    head = head_revision(script_location)
    script = _scripts(script_location)
    with engine.connect() as connection:
        current = tuple(MigrationContext.configure(connection).get_current_heads())
        tables = set(inspect(connection).get_table_names()) - {VERSION_TABLE}
    if not current:
        state = SchemaState.UNMANAGED if tables else SchemaState.EMPTY
    elif current == (head,):
        state = SchemaState.CURRENT
    else:
        try:
            known = all(script.get_revision(revision) is not None for revision in current)
        except CommandError:
            known = False
        state = SchemaState.BEHIND if known else SchemaState.AHEAD
    return SchemaStatus(state=state, current=current, head=head)


def _migrate(url: str | URL, revision: str, *, upgrade: bool, script_location: Path | None) -> None:
    # A dedicated engine with foreign keys off (see create_catalog_engine), disposed afterwards.
    engine = create_catalog_engine(url, foreign_keys=False)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Replicas starting together on an empty database would each create the schema:
                # one at a time, and the next finds it done (PostgreSQL's DDL is transactional;
                # SQLite's write lock already serialises this).
                lock = text("SELECT pg_advisory_xact_lock(:key)")
                connection.execute(lock, {"key": MIGRATION_LOCK})
            config = alembic_config(url, script_location=script_location, connection=connection)
            if upgrade:
                command.upgrade(config, revision)
            else:
                command.downgrade(config, revision)
            if is_sqlite(url):
                broken = connection.execute(text("PRAGMA foreign_key_check")).fetchall()
                if broken:
                    raise SchemaMismatchError(
                        f"migration to {revision} left {len(broken)} rows with broken foreign "
                        "keys; the change was rolled back"
                    )
    finally:
        engine.dispose()


def upgrade(url: str | URL, revision: str = "head", *, script_location: Path | None = None) -> None:
    _migrate(url, revision, upgrade=True, script_location=script_location)


def downgrade(url: str | URL, revision: str, *, script_location: Path | None = None) -> None:
    _migrate(url, revision, upgrade=False, script_location=script_location)


def ensure_schema(
    engine: Engine, *, auto_upgrade: bool, script_location: Path | None = None
) -> SchemaStatus:
    """Refuse to run on a schema this code does not match; create it in an empty database.

    An empty database (a fresh data directory) is set up without asking: there is nothing to
    lose. An existing catalog is only migrated when ``auto_upgrade`` says so, because a person may
    want a backup first.
    """
    status = schema_status(engine, script_location=script_location)
    where = make_url(engine.url).render_as_string(hide_password=True)
    if status.state is SchemaState.CURRENT:
        return status
    if status.state is SchemaState.EMPTY or (status.state is SchemaState.BEHIND and auto_upgrade):
        if status.state is SchemaState.EMPTY:
            log.info("catalog %s is empty: creating schema %s", where, status.head)
        else:
            log.warning(
                "catalog %s: upgrading schema %s -> %s (VIZDEX_AUTO_UPGRADE)",
                where,
                ", ".join(status.current),
                status.head,
            )
        upgrade(engine.url, script_location=script_location)
        return schema_status(engine, script_location=script_location)
    if status.state is SchemaState.BEHIND:
        raise SchemaOutOfDateError(
            f"the catalog database {where} has schema revision {', '.join(status.current)} but "
            f"this vizdex needs {status.head}: run `vizdex db upgrade` (back the database up "
            "first), or set VIZDEX_AUTO_UPGRADE=true to upgrade on start",
            current=list(status.current),
            head=status.head,
        )
    if status.state is SchemaState.AHEAD:
        raise SchemaMismatchError(
            f"the catalog database {where} has schema revision {', '.join(status.current)}, "
            "which this vizdex does not know: it was written by a newer vizdex; upgrade vizdex",
            current=list(status.current),
            head=status.head,
        )
    raise SchemaMismatchError(
        f"the database {where} has tables but no vizdex schema revision; point "
        "VIZDEX_DATABASE_URL at an empty database or an existing vizdex catalog"
    )
