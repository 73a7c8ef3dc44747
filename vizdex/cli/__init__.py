"""The ``vizdex`` command line. Each command module exposes ``register(subparsers)`` and sets
``handler`` on its parser; only ``serve`` imports the web app, and only when it runs.
"""

from __future__ import annotations

from types import ModuleType

from vizdex.cli import collections as collections
from vizdex.cli import db as db
from vizdex.cli import duplicates as duplicates
from vizdex.cli import follow as follow
from vizdex.cli import ingest as ingest
from vizdex.cli import models as models
from vizdex.cli import reindex as reindex
from vizdex.cli import search as search_cmd
from vizdex.cli import serve as serve
from vizdex.cli import worker as worker

COMMAND_MODULES: tuple[ModuleType, ...] = (
    ingest,
    search_cmd,
    duplicates,
    collections,
    reindex,
    follow,
    models,
    serve,
    worker,
    db,
)
