"""``vizdex collections``: list, create and delete collections."""

from __future__ import annotations

import argparse
import json
from typing import Any

from vizdex.cli import model_changes
from vizdex.cli.options import (
    add_data_option,
    check_models,
    create_collection,
    encoder_settings,
    json_option,
    open_catalog,
    open_storage,
)
from vizdex.core.errors import InvalidInputError


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "collections",
        help="list, create or delete collections",
        description="Without an action, list the collections with their models and sizes.",
    )
    add_data_option(parser)
    json_option(parser)
    parser.set_defaults(handler=run_list)
    actions = parser.add_subparsers(dest="collections_command", metavar="ACTION")

    listing = actions.add_parser("list", help="list collections (the default)")
    add_data_option(listing, nested=True)
    json_option(listing, nested=True)
    listing.set_defaults(handler=run_list)

    create = actions.add_parser(
        "create",
        help="create an empty collection",
        description="Create a collection embedded with the given models (default VIZDEX_MODELS). "
        "CLIP-like models allow text search; DINOv3 adds image-to-image search.",
    )
    create.add_argument("name", help="1-100 letters, digits, '_', '-' or '.'")
    create.add_argument(
        "--model",
        dest="models",
        action="append",
        metavar="ID_OR_DIR",
        help="Hugging Face id or local checkpoint directory; repeat for several",
    )
    add_data_option(create, nested=True)
    json_option(create, nested=True)
    create.set_defaults(handler=run_create)

    delete = actions.add_parser(
        "delete",
        help="delete a collection with its images, vectors and jobs",
        description="Delete a collection from the catalog and remove its index files. Folder "
        "images stay where they are; nothing outside the data directory is touched.",
    )
    delete.add_argument("name")
    delete.add_argument("--yes", action="store_true", help="really delete (required)")
    add_data_option(delete, nested=True)
    delete.set_defaults(handler=run_delete)
    model_changes.register(actions)


def run_list(args: argparse.Namespace) -> int:
    catalog, _ = open_catalog(args)
    try:
        rows: list[dict[str, Any]] = [
            {
                "name": record.name,
                "images": catalog.count_images(record.id),
                "models": list(record.models),
                "precisions": {model: list(names) for model, names in record.precisions.items()},
                "states": {model: record.state_of(model).value for model in record.models},
                "text_model": record.text_model,
                "image_model": record.image_model,
                "created_at": record.created_at.isoformat(timespec="seconds"),
            }
            for record in catalog.list_collections()
        ]
    finally:
        catalog.close()
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no collections yet: `vizdex collections create NAME` or `vizdex ingest`")
    else:
        width = max(len(row["name"]) for row in rows)
        for row in rows:
            models = ", ".join(
                _with_precisions(model, row["precisions"])
                + ("" if row["states"][model] == "ready" else f" [{row['states'][model]}]")
                for model in row["models"]
            )
            print(f"{row['name']:<{width}}  {row['images']:>9,} images  models: {models}")
    return 0


def _with_precisions(model: str, precisions: dict[str, list[str]]) -> str:
    """``model (bfloat16)``: the precisions its vectors were computed in, when recorded."""
    names = precisions.get(model)
    return f"{model} ({', '.join(names)})" if names else model


def run_create(args: argparse.Namespace) -> int:
    settings = encoder_settings(args)
    check_models(settings.models)
    catalog, _ = open_catalog(args, create=True)
    try:
        record = create_collection(catalog, args.name, settings.models)
    finally:
        catalog.close()
    if args.json:
        print(json.dumps({"name": record.name, "models": list(record.models)}, indent=2))
    else:
        print(f"created collection {record.name!r} with models: {', '.join(record.models)}")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    with open_storage(args) as (search, storage):
        record = search.get_collection(args.name)
        images = search.catalog.count_images(record.id)
        if not args.yes:
            raise InvalidInputError(
                f"collection {record.name!r} has {images:,} images; add --yes to delete it"
            )
        storage.delete_collection(record.name)  # the rows, its index files, then its files
    print(f"deleted collection {record.name!r} ({images:,} images)")
    return 0
