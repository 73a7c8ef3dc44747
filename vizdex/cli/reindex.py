"""``vizdex reindex``: rebuild a collection's vector indexes (or its Milvus collections)."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from typing import Any

from vizdex.cli.options import add_data_option, open_catalog
from vizdex.search import Catalog, CollectionRecord, IndexStore, SearchSettings
from vizdex.search.settings import MILVUS_INDEX_TYPES
from vizdex.search.vector_store import check_vector_store, is_milvus, open_milvus


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "reindex",
        help="rebuild a collection's vector indexes from the catalog",
        description=(
            "Throw the collection's index files away and build them again from the vectors in "
            "the catalog (the source of truth). Nothing is re-embedded. A running server keeps "
            "its in-memory indexes, which stay consistent by replaying the catalog. With "
            "VIZDEX_VECTOR_STORE (or --store) naming Milvus, the collection's Milvus "
            "collections are rebuilt instead, and their index verified."
        ),
    )
    parser.add_argument("--collection", "-c", required=True, metavar="NAME")
    parser.add_argument(
        "--store",
        metavar="SPEC",
        help="the vector store to rebuild: faiss, milvus://host:19530 or a milvus-lite .db "
        "file (default VIZDEX_VECTOR_STORE); naming Milvus here copies a FAISS collection there",
    )
    parser.add_argument(
        "--index-type",
        choices=[t.upper() for t in MILVUS_INDEX_TYPES],
        type=str.upper,
        help="Milvus index type of the rebuilt collection (default: its current one, else "
        "VIZDEX_MILVUS_INDEX)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_data_option(parser)
    parser.set_defaults(handler=run)


def _faiss(catalog: Catalog, settings: SearchSettings, record: CollectionRecord) -> list[Any]:
    indexes = IndexStore(catalog, settings.index)
    try:
        indexes.drop_collection(record.id)  # forget loaded state and remove the files
        indexes.open_collection(record)  # no file: built from the catalog
        indexes.snapshot(record)
        infos = [indexes.info(record, model) for model in record.models]
    finally:
        indexes.close()
    return [
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


def _milvus(
    catalog: Catalog, settings: SearchSettings, record: CollectionRecord, index_type: str | None
) -> list[Any]:
    store = open_milvus(catalog, settings.index)
    try:
        names = store.reindex(record, index_type)
        rows = []
        for model, name in zip(record.models, names, strict=True):
            position = catalog.store_position(store.target.key, record.id, model)
            rows.append(
                {
                    "model": model,
                    "kind": position.index_type if position else "-",
                    "vectors": store.count(record, model),
                    "dimensions": store.dim(record, model) or 0,
                    "last_seq": position.applied_seq if position else 0,
                    "milvus_collection": name,
                }
            )
    finally:
        store.close()
    return rows


def run(args: argparse.Namespace) -> int:
    catalog, settings = open_catalog(args)
    if args.store:
        check_vector_store(args.store)
        settings = replace(settings, index=replace(settings.index, vector_store=args.store))
    milvus = is_milvus(settings.index.vector_store)
    started = time.perf_counter()
    try:
        record = catalog.get_collection(args.collection)
        if milvus:
            rows = _milvus(catalog, settings, record, args.index_type)
        else:
            rows = _faiss(catalog, settings, record)
    finally:
        catalog.close()
    elapsed = time.perf_counter() - started
    if args.json:
        output = {"collection": record.name, "store": "milvus" if milvus else "faiss"}
        print(json.dumps({**output, "indexes": rows}, indent=2))
    else:
        where = " in Milvus" if milvus else ""
        for row in rows:
            print(
                f"{record.name} / {row['model']}: {row['kind']} index with {row['vectors']:,} "
                f"vectors rebuilt{where}"
            )
        print(f"done in {elapsed:.1f} s")
    return 0
