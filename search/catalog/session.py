"""The catalog's one read path and one write path, its collection lock and sequence numbers.

Every write of every part of the catalog goes through ``CatalogSession._write``: a transaction on
the writer engine, which on SQLite begins with ``BEGIN IMMEDIATE`` (it waits for the write lock up
front instead of failing when a read upgrades to a write) and on PostgreSQL runs at READ COMMITTED.
Writes that touch a collection's images, vectors or jobs then lock that collection's row
(``_lock``: ``FOR NO KEY UPDATE`` on PostgreSQL, the database-wide write lock on SQLite), so
writers of one collection run one at a time on any backend, whatever process or machine they are
on. A writer allocates its sequence numbers while it holds the lock and commits before releasing
it, so commits of one collection happen in sequence-number order: a reader that sees
``last_seq = N`` sees every change up to N, and a change it has not seen yet has a number above N.
That is what lets a follower replay ``(after, upto]`` and never skip a commit.

Every read goes through ``_read``: one snapshot for all its statements (SQLite's transaction;
PostgreSQL's ``REPEATABLE READ READ ONLY``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Self, TypeVar

from sqlalchemy import Engine, make_url, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from vizdex.core.errors import UnavailableError, VizdexError, storage_full, storage_read_only
from vizdex.search.db import create_catalog_engine, reader, sqlite_file, writer
from vizdex.search.errors import CollectionNotFoundError, SchemaMismatchError
from vizdex.search.models import Collection
from vizdex.search.schema import ensure_schema
from vizdex.search.settings import CatalogSettings

# Well under SQLite's bound-parameter limit, and keeps IN lists cheap everywhere.
CHUNK = 5000

T = TypeVar("T")


def chunks(values: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def allocate(collection: Collection, count: int) -> int:
    """Reserve ``count`` sequence numbers of a locked collection; returns the first."""
    first = collection.last_seq + 1
    collection.last_seq = collection.last_seq + count
    return first


class CatalogSession:
    """The engine, and the transactions every part of the catalog runs in."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._reader = reader(engine)
        self._writer = writer(engine)

    @classmethod
    def open(cls, settings: CatalogSettings, *, script_location: Path | None = None) -> Self:
        """Open the catalog for the service: refuses a schema that does not match this code."""
        engine = create_catalog_engine(
            settings.database_url, busy_timeout_ms=settings.busy_timeout_ms
        )
        try:
            ensure_schema(
                engine, auto_upgrade=settings.auto_upgrade, script_location=script_location
            )
        except DBAPIError as error:
            engine.dispose()
            raise unopenable(settings.database_url, error) from error
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @property
    def engine(self) -> Engine:
        return self._engine

    def check_writable(self) -> None:
        """Take the write lock once and let it go: SQLite opens a database it cannot write (e.g.
        when its shared-memory file is not a regular file) read-only, without an error, so a
        server would start and refuse every write; this says so at once."""
        try:
            with self._write() as session:
                session.connection()  # the connection begins with the write lock (IMMEDIATE)
        except DBAPIError as error:
            refused = storage_read_only(error)
            if refused is not None:
                raise refused from error
            raise

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """One read transaction: every statement in it sees the same committed state."""
        with Session(self._reader, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """The one write path: commits on leaving, rolls back on an error."""
        with Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    @staticmethod
    def _lock(session: Session, collection_id: int) -> Collection:
        """Locks the collection row until commit (first thing in a write): one writer at a time."""
        row = CatalogSession._lock_if_present(session, collection_id)
        if row is None:
            raise CollectionNotFoundError(f"collection {collection_id} does not exist")
        return row

    @staticmethod
    def _lock_if_present(session: Session, collection_id: int) -> Collection | None:
        # NO KEY UPDATE (``key_share``): the counter changes, never the key, so inserts of child
        # rows elsewhere (their foreign-key checks take KEY SHARE) are not held up by it.
        return session.scalars(
            select(Collection).where(Collection.id == collection_id).with_for_update(key_share=True)
        ).one_or_none()


def unopenable(url: str, error: DBAPIError) -> VizdexError:
    """Why the catalog database cannot be opened, for the person who pointed vizdex at it."""
    database = sqlite_file(url)
    full = storage_full(error, database.parent if database is not None else None)
    if full is not None:
        return full
    shown = make_url(url).render_as_string(hide_password=True)
    reason = str(error.orig).strip().splitlines()[0] if error.orig is not None else str(error)
    if "file is not a database" in reason:
        return SchemaMismatchError(
            f"{shown} is not a vizdex catalog (not even an SQLite database): point "
            "VIZDEX_DATA_DIR or VIZDEX_DATABASE_URL at a catalog, or move the file away"
        )
    hint = (
        "is its folder writable, and is it a regular file?"
        if database is not None
        else "is the server running and reachable from here, do the user, password and "
        "database name in VIZDEX_DATABASE_URL exist, and is vizdex[postgres] installed?"
    )
    return UnavailableError(f"cannot open the catalog database {shown}: {reason} ({hint})")
