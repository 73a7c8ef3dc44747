"""Options the commands share: flags that mirror ``VIZDEX_*`` variables (a flag wins over the
environment), ``--data-dir``, ``--json``, and opening what they name."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace

from vizdex.core.errors import NotFoundError
from vizdex.core.kinds import ModelKind
from vizdex.encoders.base import Encoder
from vizdex.encoders.discovery import discover_model
from vizdex.encoders.settings import DEVICES, DTYPES, EncoderSettings
from vizdex.indexer import DataStore, IndexerSettings, StorageCollector
from vizdex.search import (
    Catalog,
    CollectionRecord,
    SearchService,
    SearchSettings,
    default_models,
)
from vizdex.search.db import sqlite_file


def add_encoder_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models (defaults: VIZDEX_MODELS, _DEVICE, _DTYPE)")
    group.add_argument(
        "--model",
        dest="models",
        action="append",
        metavar="ID_OR_DIR",
        help="Hugging Face id or local checkpoint directory; repeat for several",
    )
    add_runtime_options(group)
    group.add_argument("--batch-size", type=int, help="images per forward pass")


def add_runtime_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Where and in which precision models run (``VIZDEX_DEVICE``, ``VIZDEX_DTYPE``)."""
    parser.add_argument("--device", choices=DEVICES, help="where models run")
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        help="compute precision: auto (float16 on CUDA; bfloat16 on a CPU with AMX or "
        "AVX512-BF16, else float32), float32, float16 (CUDA), bfloat16, int8 (CPU)",
    )


def finite_float(text: str) -> float:
    """An argparse type: a number that is not nan or ±inf (nan passes every bound check: as a
    grace period it meant none at all; inf never ends a wait)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def encoder_settings(
    args: argparse.Namespace, *, models: tuple[str, ...] | None = None
) -> EncoderSettings:
    """``VIZDEX_*`` encoder settings with the command's flags applied; ``models`` wins over both."""
    settings = EncoderSettings.from_env(command_env(args))
    overrides: dict[str, object] = {}
    if models is not None:
        overrides["models"] = models
    elif getattr(args, "models", None):
        overrides["models"] = tuple(m for value in args.models for m in value.split(",") if m)
    for name in ("device", "dtype", "batch_size"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return replace(settings, **overrides)  # type: ignore[arg-type]


def add_data_option(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """``nested``: on an action under a parser that has it too (absent must not override)."""
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        default=argparse.SUPPRESS if nested else None,
        help="where the catalog, indexes and thumbnails live (default VIZDEX_DATA_DIR, "
        "else ./vizdex-data)",
    )


def json_option(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if nested else False,
        help="print JSON",
    )


def command_env(args: argparse.Namespace) -> Mapping[str, str]:
    """The environment the settings are read from, with ``--data-dir`` applied."""
    env = dict(os.environ)
    if getattr(args, "data_dir", None):
        env["VIZDEX_DATA_DIR"] = str(args.data_dir)
    return env


def open_catalog(
    args: argparse.Namespace, *, create: bool = False
) -> tuple[Catalog, SearchSettings]:
    """The catalog the command's settings name. Only commands that add data (``create``:
    ``ingest``, ``collections create``) start a missing SQLite catalog; the others say where
    they looked, so a mistyped ``--data-dir`` is neither an empty answer nor a new folder."""
    settings = SearchSettings.from_env(command_env(args))
    if not create:
        require_catalog(settings)
    return Catalog.open(settings.catalog), settings


def require_catalog(settings: SearchSettings) -> None:
    """Refuses (``catalog_not_found``) a SQLite catalog file that does not exist."""
    path = sqlite_file(settings.catalog.database_url)
    # SQLite takes a zero-byte file for an empty database and would write a new catalog into
    # it; a WAL catalog's file always holds at least its first page.
    if path is not None and (not path.exists() or (path.is_file() and not path.stat().st_size)):
        raise NotFoundError(
            f"no catalog at {path}: name the data directory that `vizdex serve` or "
            "`vizdex ingest` uses with --data-dir or VIZDEX_DATA_DIR (or the catalog "
            "itself with VIZDEX_DATABASE_URL)",
            code="catalog_not_found",
        )


def quiet_model_loading(args: argparse.Namespace) -> None:
    """No per-shard "Loading weights" bars from transformers: our own bar is the one to read."""
    if not getattr(args, "verbose", False):
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def check_models(models: tuple[str, ...]) -> None:
    """Refuse unknown or unsupported models from their config alone (no weights are loaded)."""
    for model in models:
        discover_model(model)


def discovered_kind(model: str) -> ModelKind:
    """A model's kind from its config alone: commands load only the model that answers, or none."""
    return discover_model(model).kind


def create_collection(catalog: Catalog, name: str, models: tuple[str, ...]) -> CollectionRecord:
    """A new collection with its text and image query defaults, as the server makes one."""
    text_model, image_model = default_models(models, discovered_kind)
    return catalog.create_collection(name, models, text_model=text_model, image_model=image_model)


@contextmanager
def open_storage(
    args: argparse.Namespace, *, encoders: Mapping[str, Encoder] | None = None
) -> Iterator[tuple[SearchService, StorageCollector]]:
    """The catalog, its indexes (no models loaded) and the collector of the data directory's
    files: what deletes and ``vizdex gc`` need. Indexes are saved on the way out."""
    env = command_env(args)
    settings = SearchSettings.from_env(env)
    indexer = IndexerSettings.from_env(env)
    require_catalog(settings)  # deletes and gc have nothing to do in a new folder
    search = SearchService.open(settings, encoders or {})  # its vector store too (Milvus)
    try:
        yield (
            search,
            StorageCollector(
                search,
                DataStore(indexer.data_dir),
                grace_s=indexer.gc_grace_s,
                job_retention_s=indexer.job_retention_s,
            ),
        )
    finally:
        search.close()
