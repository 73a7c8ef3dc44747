"""``vizdex collections add-model | remove-model | set-default``: change a collection's models.

``add-model`` back-fills in this process (a progress bar on stderr) and is resumable: run it again
after a kill and it embeds only what is still missing. A running server does the same through
``POST /v1/collections/{name}/models``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any

from vizdex.cli.options import (
    add_data_option,
    add_runtime_options,
    command_env,
    discovered_kind,
    encoder_settings,
    finite_float,
    json_option,
    open_catalog,
    open_storage,
    quiet_model_loading,
)
from vizdex.core.errors import CapabilityError, InvalidInputError
from vizdex.core.kinds import ModelKind
from vizdex.encoders.discovery import model_spelling
from vizdex.encoders.loading import load_encoder
from vizdex.imaging import ImageInputSettings
from vizdex.indexer import Indexer, IndexerSettings, ModelChanges
from vizdex.search import CollectionRecord, SearchService


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add = actions.add_parser(
        "add-model",
        help="add a model to a collection and back-fill its images",
        description="Embed every image of the collection with MODEL (from its stored original "
        "or folder path), then mark MODEL ready. Queries keep using the other models until "
        "MODEL is ready and made a default (`set-default`). Run again after an interruption: "
        "only what is missing is embedded.",
    )
    add.add_argument("name")
    add.add_argument("--model", required=True, metavar="ID_OR_DIR")
    add.add_argument(
        "--share",
        type=finite_float,
        default=None,
        help="share of the device the back-fill may take, 0.05-1 (VIZDEX_BACKFILL_SHARE)",
    )
    add.add_argument(
        "--ray",
        metavar="auto|ray://HOST:10001",
        help="run the back-fill's batches on a Ray cluster: decoding on its CPU workers, the "
        "model in an actor pool (needs `vizdex[ray]` here and on the workers)",
    )
    add.add_argument("--batch-size", type=int, help="images per forward pass")
    add_runtime_options(add)
    add_data_option(add, nested=True)
    json_option(add, nested=True)
    add.set_defaults(handler=run_add)

    remove = actions.add_parser(
        "remove-model",
        help="remove a model that is not a default, with its vectors and index",
    )
    remove.add_argument("name")
    remove.add_argument("--model", required=True, metavar="ID_OR_DIR")
    add_data_option(remove, nested=True)
    json_option(remove, nested=True)
    remove.set_defaults(handler=run_remove)

    default = actions.add_parser(
        "set-default",
        help="make a ready model the default for text and/or image queries (atomic)",
    )
    default.add_argument("name")
    default.add_argument("--text", metavar="MODEL", help="the model text queries use")
    default.add_argument("--image", metavar="MODEL", help="the model image queries use")
    add_data_option(default, nested=True)
    json_option(default, nested=True)
    default.set_defaults(handler=run_set_default)


def _shown(search: SearchService, record: CollectionRecord) -> dict[str, Any]:
    vectors = search.catalog.model_coverage(record.id)
    images = search.catalog.count_images(record.id)
    return {
        "name": record.name,
        "images": images,
        "text_model": record.text_model,
        "image_model": record.image_model,
        "models": [
            {
                "model": model,
                "state": record.state_of(model).value,
                "vectors": vectors.get(model, 0),
                "coverage": 1.0 if images == 0 else min(1.0, vectors.get(model, 0) / images),
            }
            for model in record.models
        ],
    }


def _print(args: argparse.Namespace, shown: dict[str, Any], extra: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps({**shown, **extra}, indent=2))
        return
    print(
        f"{shown['name']}: {shown['images']:,} images; text queries: {shown['text_model']}, "
        f"image queries: {shown['image_model']}"
    )
    for row in shown["models"]:
        print(f"  {row['model']}: {row['state']}, {row['coverage']:.1%} covered")


def _recorded(args: argparse.Namespace, model: str) -> str:
    """The model as the collection records it: a directory spelled otherwise (``./clip``,
    ``clip/``) is the model the collection has, not a second one; a new one is absolute. Read
    before the storage opens: add-model loads the encoder under this name first."""
    catalog, _ = open_catalog(args)
    try:
        known = catalog.get_collection(args.name).models
    finally:
        catalog.close()
    return model_spelling(model, known)


def run_add(args: argparse.Namespace) -> int:
    args.model = _recorded(args, args.model)
    env = command_env(args)
    settings = IndexerSettings.from_env(env)
    if args.share is not None:
        if not 0.05 <= args.share <= 1.0:
            raise InvalidInputError(f"--share must be between 0.05 and 1, got {args.share}")
        settings = replace(settings, backfill_share=args.share)
    models = encoder_settings(args, models=(args.model,))
    if args.batch_size is not None:
        settings = replace(settings, batch_size=args.batch_size)
    quiet_model_loading(args)
    encoder = load_encoder(args.model, models)
    with open_storage(args, encoders={args.model: encoder}) as (search, _):
        indexer = Indexer(
            search.catalog,
            search.indexes,
            {args.model: encoder},
            settings,
            ImageInputSettings.from_env(env),
        )
        try:

            def progress(done: int, total: int) -> None:
                if not args.json:
                    sys.stderr.write(f"\rback-filling {args.model}: {done:,}/{total:,}")
                    sys.stderr.flush()

            _, job = ModelChanges(search, indexer).add_model(
                args.name, args.model, background=False, progress=progress, ray_address=args.ray
            )
        finally:
            indexer.close()
        if not args.json:
            sys.stderr.write("\n")
        shown = _shown(search, search.get_collection(args.name))
    _print(
        args,
        shown,
        {"job": {"id": job.id, "state": job.state.value, "done": job.done, "failed": job.failed}},
    )
    return 0 if job.failed == 0 else 1


def run_remove(args: argparse.Namespace) -> int:
    with open_storage(args) as (search, _):
        known = search.get_collection(args.name).models
        search.remove_model(args.name, model_spelling(args.model, known))
        shown = _shown(search, search.get_collection(args.name))
    _print(args, shown, {})
    return 0


def run_set_default(args: argparse.Namespace) -> int:
    if args.text is None and args.image is None:
        raise InvalidInputError("give --text MODEL and/or --image MODEL")
    if args.text is not None and discovered_kind(args.text) is ModelKind.VISION:
        raise CapabilityError(
            f"model {args.text!r} is vision-only and cannot answer text queries", model=args.text
        )
    with open_storage(args) as (search, _):
        record = search.get_collection(args.name)
        changes = {
            key: model_spelling(value, record.models)
            for key, value in (("text_model", args.text), ("image_model", args.image))
            if value is not None
        }
        search.catalog.set_default_models(record.id, **changes)
        shown = _shown(search, search.get_collection(args.name))
    _print(args, shown, {})
    return 0
