"""Subcommand modules; each exposes ``register(subparsers)`` and sets ``handler`` on its parser."""

from __future__ import annotations

from types import ModuleType

from web.commands import db as db
from web.commands import models as models
from web.commands import serve as serve

COMMAND_MODULES: tuple[ModuleType, ...] = (models, serve, db)
