"""Engines for the catalog: SQLite (embedded profile) or PostgreSQL (distributed profile).

Both get the same guarantees from different mechanisms:

- a write waits for other writers instead of failing: SQLite ``BEGIN IMMEDIATE`` and
  ``busy_timeout``; PostgreSQL row locks (the collection row, ``FOR NO KEY UPDATE``) and
  ``lock_timeout`` set from the same setting;
- a read sees one committed state: SQLite snapshots per transaction; PostgreSQL runs reads as
  ``REPEATABLE READ READ ONLY`` (one snapshot, never a serialization failure);
- a commit survives a power cut: SQLite WAL with ``synchronous=FULL``; PostgreSQL its own WAL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection
from sqlalchemy.engine import make_url as _make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError

from vizdex.core.errors import InvalidInputError, UnavailableError

# Execution option read by the SQLite "begin" hook: "IMMEDIATE" takes the write lock up front.
SQLITE_BEGIN = "vizdex_sqlite_begin"
# Rows per multi-row INSERT on PostgreSQL (its bound-parameter limit is 65535 per statement).
INSERT_PAGE = 1000


SUPPORTED = "sqlite:///path/catalog.db or postgresql+psycopg://user:password@host/database"


def make_url(url: str | URL) -> URL:
    """The parsed URL; one that is not a database URL is the user's setting, said in words."""
    try:
        return _make_url(url)
    except ArgumentError:
        raise InvalidInputError(
            f"VIZDEX_DATABASE_URL {str(url)!r} is not a database URL (use {SUPPORTED})"
        ) from None


def check_supported(url: str | URL) -> None:
    """SQLite, or PostgreSQL through psycopg 3: the engines the catalog's guarantees are
    proven on. Anything else is refused at start, naming the setting."""
    parsed = make_url(url)
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "sqlite" and driver in ("pysqlite", "sqlite"):
        return
    if backend == "postgresql" and driver in ("psycopg", "psycopg2"):  # psycopg2: the default
        return  # name of a bare postgresql:// URL, which catalog_url pins to psycopg 3
    shown = parsed.render_as_string(hide_password=True)
    raise InvalidInputError(
        f"VIZDEX_DATABASE_URL {shown!r}: the {backend}+{driver} database driver is not supported "
        f"(use {SUPPORTED})"
    )


def unavailable_database(error: BaseException) -> UnavailableError | None:
    """The typed error for a catalog that cannot be reached right now (server down, connection
    dropped, SQLite file gone), or None when ``error`` is something else."""
    lost = isinstance(error, OperationalError | InterfaceError) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    )
    if not lost:
        return None
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    return UnavailableError(
        f"the catalog database cannot be used right now ({reason}); retry shortly",
        code="database_unavailable",
    )


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def is_postgresql(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def catalog_url(url: str | URL) -> URL:
    """The URL as given, with PostgreSQL pinned to psycopg 3 (``vizdex[postgres]``).

    A bare ``postgresql://`` (or ``postgres://``, as many hosting services print it) would make
    SQLAlchemy look for psycopg2, which vizdex does not install.
    """
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    if text.startswith("postgres://"):
        text = "postgresql://" + text[len("postgres://") :]
    parsed = make_url(text)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def sqlite_file(url: str | URL) -> Path | None:
    """The database file of a SQLite URL, or None for in-memory / non-SQLite URLs."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def create_catalog_engine(
    url: str | URL, *, busy_timeout_ms: int = 30_000, foreign_keys: bool = True
) -> Engine:
    """An engine for the catalog.

    SQLite gets WAL (readers never block the writer), ``synchronous=FULL`` (a commit survives a
    power cut, which is what "acknowledged only after commit" promises), foreign keys, and a busy
    timeout. Migrations pass ``foreign_keys=False``: SQLite batch migrations copy and drop tables,
    and a DROP with foreign keys on would cascade-delete the children.

    PostgreSQL gets the same wait bound as ``lock_timeout`` (a writer that cannot get a row lock
    in time fails instead of hanging), pre-pinged pooled connections (a server restart costs one
    retry, not an error), and multi-row INSERTs for bulk writes.
    """
    check_supported(url)
    database = sqlite_file(url)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    if is_postgresql(url):
        try:
            import psycopg  # noqa: F401 - only to say what is missing, in words
        except ImportError:
            raise UnavailableError(
                "a PostgreSQL catalog needs the psycopg driver: pip install 'vizdex[postgres]'"
            ) from None
        engine = create_engine(
            catalog_url(url),
            pool_pre_ping=True,
            pool_size=8,
            max_overflow=24,
            pool_timeout=60,
            insertmanyvalues_page_size=INSERT_PAGE,
            connect_args={
                "options": f"-c lock_timeout={int(busy_timeout_ms)}",
                "connect_timeout": 10,
                "application_name": "vizdex",
            },
        )
        # Every executemany INSERT (vectors, tombstones) goes as multi-row INSERT ... VALUES
        # pages, as INSERT ... RETURNING (images) already does: one round trip per page.
        engine.dialect.use_insertmanyvalues_wo_returning = True
        return engine
    engine = create_engine(url, pool_size=8, max_overflow=24, pool_timeout=60)
    _install_sqlite_hooks(engine, busy_timeout_ms=busy_timeout_ms, foreign_keys=foreign_keys)
    return engine


def _install_sqlite_hooks(engine: Engine, *, busy_timeout_ms: int, foreign_keys: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The sqlite3 module would otherwise BEGIN lazily (only before DML), making reads inside a
        # "transaction" see different snapshots; SQLAlchemy emits BEGIN itself (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A write transaction that reads first and upgrades to a write lock later can fail at once
        # with SQLITE_BUSY (the busy timeout does not apply); IMMEDIATE waits for the lock instead.
        mode = connection.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def writer(engine: Engine) -> Engine:
    """The same engine, set up for transactions that write.

    SQLite: they take the write lock when they begin. PostgreSQL: READ COMMITTED, so a statement
    after a row lock sees everything committed before the lock was granted (the lock is what
    orders writers; a REPEATABLE READ snapshot would predate it).
    """
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="READ COMMITTED")
    return engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})


def reader(engine: Engine) -> Engine:
    """The same engine, set up for transactions that only read: one snapshot for all statements.

    SQLite's transactions already read one snapshot. PostgreSQL's default READ COMMITTED would
    give each statement its own; a read-only REPEATABLE READ transaction sees one and can never
    fail with a serialization error.
    """
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    return engine
