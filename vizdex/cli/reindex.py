"""``vizdex reindex``: rebuild a collection's vector indexes from the catalog."""

from __future__ import annotations

import argparse
import json
import time

from vizdex.cli.options import add_data_option, open_catalog
from vizdex.search import IndexStore


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "reindex",
        help="rebuild a collection's vector indexes from the catalog",
        description=(
            "Throw the collection's index files away and build them again from the vectors in "
            "the catalog (the source of truth). Nothing is re-embedded. A running server keeps "
            "its in-memory indexes, which stay consistent by replaying the catalog."
        ),
    )
    parser.add_argument("--collection", "-c", required=True, metavar="NAME")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_data_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    catalog, settings = open_catalog(args)
    started = time.perf_counter()
    try:
        record = catalog.get_collection(args.collection)
        indexes = IndexStore(catalog, settings.index)
        try:
            indexes.drop_collection(record.id)  # forget loaded state and remove the files
            indexes.open_collection(record)  # no file: built from the catalog
            indexes.snapshot(record)
            infos = [indexes.info(record, model) for model in record.models]
        finally:
            indexes.close()
    finally:
        catalog.close()
    elapsed = time.perf_counter() - started
    rows = [
        {
            "model": info.model,
            "kind": info.kind,
            "vectors": info.count,
            "dimensions": info.dim,
            "last_seq": info.last_seq,
            "file": str(info.path),
        }
        for info in infos
    ]
    if args.json:
        print(json.dumps({"collection": record.name, "indexes": rows}, indent=2))
    else:
        for row in rows:
            print(
                f"{record.name} / {row['model']}: {row['kind']} index with {row['vectors']:,} "
                f"vectors rebuilt"
            )
        print(f"done in {elapsed:.1f} s")
    return 0
