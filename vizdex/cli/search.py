"""``vizdex search``: ranked hits for a text, an image file, or an image already in a collection."""

from __future__ import annotations

import argparse
import json
from typing import Any

from vizdex.cli.options import (
    add_data_option,
    add_runtime_options,
    command_env,
    discovered_kind,
    encoder_settings,
    json_option,
    open_catalog,
    quiet_model_loading,
)
from vizdex.encoders.base import Encoder
from vizdex.encoders.loading import load_encoder
from vizdex.imaging import decode_file
from vizdex.imaging.settings import ImageInputSettings
from vizdex.search import (
    IndexStore,
    InvalidQueryError,
    ModelUse,
    SearchOptions,
    SearchResult,
    SearchService,
    choose_model,
)
from vizdex.search.vector_store import open_vector_store


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "search",
        help="search a collection by text, by image, or by an image's id",
        description=(
            "Print the k best matches, best first. Text queries use the collection's CLIP-like "
            "model; image and id queries prefer a vision model (DINOv3) when the collection has "
            "one. --id searches from the stored vector: no model is loaded."
        ),
    )
    parser.add_argument("--collection", "-c", required=True, metavar="NAME")
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", metavar="TEXT", help='e.g. "a red bicycle in the snow"')
    query.add_argument("--image", metavar="FILE", help="an image file: find it and look-alikes")
    query.add_argument("--id", type=int, dest="image_id", metavar="N", help="an image's id")
    parser.add_argument("-k", type=int, default=10, help="how many hits (default 10)")
    parser.add_argument("--model", metavar="ID_OR_DIR", help="which of the collection's models")
    add_runtime_options(parser)
    json_option(parser)
    add_data_option(parser)
    parser.set_defaults(handler=run)


def _hit_rows(result: SearchResult) -> list[dict[str, Any]]:
    return [
        {
            "rank": rank,
            "id": hit.image_id,
            "score": round(hit.score, 6),
            "source": hit.image.source_uri,
            "name": hit.image.original_name,
            "width": hit.image.width,
            "height": hit.image.height,
            "thumbnail": hit.image.thumbnail_path,
        }
        for rank, hit in enumerate(result.hits, start=1)
    ]


def run(args: argparse.Namespace) -> int:
    env = command_env(args)
    quiet_model_loading(args)
    catalog, settings = open_catalog(args)
    indexes = IndexStore(catalog, settings.index)
    store = None
    try:
        store = open_vector_store(catalog, indexes, settings.index, settings.query)
        record = catalog.get_collection(args.collection)
        requested = args.model or None
        if requested is not None and requested not in record.models:
            raise InvalidQueryError(
                f"collection {record.name!r} is not embedded with {requested!r}; "
                f"its models are {list(record.models)}"
            )
        model = choose_model(
            record.models,
            discovered_kind,
            ModelUse.TEXT if args.text is not None else ModelUse.IMAGE,
            requested=requested,
            owner=f"collection {record.name!r}",
        )
        encoders: dict[str, Encoder] = {}
        if args.image_id is None:
            encoders[model] = load_encoder(model, encoder_settings(args, models=(model,)))
        service = SearchService(catalog, indexes, encoders, settings.query, store=store)
        options = SearchOptions(k=args.k)
        if args.text is not None:
            result = service.search_text(record.name, args.text, model=model, options=options)
        elif args.image is not None:
            image = decode_file(
                args.image,
                ImageInputSettings.from_env(env),
                min_side=encoders[model].decode_min_side,
            )
            result = service.search_image(record.name, image.image, model=model, options=options)
        else:
            result = service.search_similar(
                record.name, args.image_id, model=model, options=options
            )
    finally:
        if store is not None:
            store.close()
        indexes.close()
        catalog.close()
    rows = _hit_rows(result)
    if args.json:
        output = {
            "collection": result.collection,
            "model": result.model,
            "approximate": result.approximate,
            "hits": rows,
        }
        print(json.dumps(output, indent=2))
        return 0
    if not rows:
        print(f"no matches in {result.collection!r}")
    for row in rows:
        where = row["source"] or row["name"] or "(upload)"
        print(f"{row['rank']:>3}  {row['score']:.4f}  #{row['id']:<8} {where}")
    return 0
