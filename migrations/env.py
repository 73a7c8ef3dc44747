"""Alembic environment: runs revisions on a connection handed in, or on one made from the URL.

``search.schema`` (the service, ``vizdex db upgrade``) always hands in a connection. Building one
here is only for developers running the ``alembic`` CLI (``-c migrations/alembic.ini``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import create_engine, event, pool
from sqlalchemy.engine import Connection

from vizdex.search.models import Base, UTCDateTime

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    if os.environ.get("VIZDEX_DATABASE_URL", "").strip():
        return os.environ["VIZDEX_DATABASE_URL"].strip()
    data_dir = Path(os.environ.get("VIZDEX_DATA_DIR", "").strip() or "./vizdex-data")
    return f"sqlite:///{data_dir / 'catalog.db'}"


def _render_item(kind: str, obj: Any, _context: AutogenContext) -> str | Literal[False]:
    # Revisions must not import application code: render our decorator as its plain column type.
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things: copy-and-move tables instead
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_database_url(), poolclass=pool.NullPool)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _foreign_keys_off(dbapi_connection: Any, _record: Any) -> None:
            # A batch migration's DROP TABLE would otherwise cascade-delete child rows.
            dbapi_connection.execute("PRAGMA foreign_keys = OFF")

    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
