"""Subcommand modules; each exposes ``register(subparsers)`` and sets ``handler`` on its parser."""

from __future__ import annotations

from types import ModuleType

from web.commands import collections as collections
from web.commands import db as db
from web.commands import ingest as ingest
from web.commands import models as models
from web.commands import reindex as reindex
from web.commands import search_cmd as search_cmd
from web.commands import serve as serve

COMMAND_MODULES: tuple[ModuleType, ...] = (
    ingest,
    search_cmd,
    collections,
    reindex,
    models,
    serve,
    db,
)
