"""``vizdex duplicates``: every group of near-duplicate images in a collection, with a keeper each.

Reads the stored vectors and the collection's index; no model is loaded.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any

from vizdex.cli.options import add_data_option, discovered_kind, finite_float, open_catalog
from vizdex.search import (
    DUPLICATE_THRESHOLD,
    KEEPER_RULES,
    DuplicateOptions,
    DuplicatePage,
    ImageFilter,
    IndexStore,
    InvalidQueryError,
    KeeperRule,
    ModelUse,
    SearchService,
    collection_model,
)
from vizdex.search.vector_store import open_vector_store

CSV_FIELDS = (
    "group",
    "group_key",
    "group_size",
    "id",
    "keeper",
    "representative",
    "similarity",
    "width",
    "height",
    "format",
    "byte_size",
    "created_at",
    "source",
)


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "duplicates",
        help="groups of near-duplicate images in a collection, with the copy to keep",
        description=(
            "Groups images whose vectors have at least --threshold cosine similarity (connected: "
            "two copies of a third are one group). By default with the collection's vision model "
            "(DINOv3) when it has one. Each group names a keeper: --prefer pixels (most pixels, "
            "then largest file, then oldest), file_size, oldest, newest or representative. "
            "Nothing is deleted. No model is loaded."
        ),
    )
    parser.add_argument("--collection", "-c", required=True, metavar="NAME")
    parser.add_argument(
        "--threshold",
        type=finite_float,
        default=DUPLICATE_THRESHOLD,
        help=f"cosine similarity in [-1, 1] (default {DUPLICATE_THRESHOLD})",
    )
    parser.add_argument("--model", metavar="ID_OR_DIR", help="which of the collection's models")
    parser.add_argument(
        "--prefer", choices=KEEPER_RULES, default=KeeperRule.PIXELS.value, help="keeper rule"
    )
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only images whose metadata KEY equals VALUE (a JSON number, true/false, or text)",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON")
    output.add_argument("--csv", action="store_true", help="print CSV, one row per image")
    add_data_option(parser)
    parser.set_defaults(handler=run)


def _metadata(pairs: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise InvalidQueryError(f"--where takes KEY=VALUE, got {pair!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        found[key] = value if isinstance(value, str | int | float | bool) else text
    return found


def _rows(page: DuplicatePage) -> list[dict[str, Any]]:
    rows = []
    for number, group in enumerate(page.groups, start=1):
        for member in group.members:
            image = member.image
            rows.append(
                {
                    "group": number,
                    "group_key": group.key,
                    "group_size": len(group.members),
                    "id": image.id,
                    "keeper": member.keeper,
                    "representative": member.representative,
                    "similarity": round(member.similarity, 6),
                    "width": image.width,
                    "height": image.height,
                    "format": image.format,
                    "byte_size": image.byte_size,
                    "created_at": image.created_at.isoformat(timespec="seconds"),
                    "source": image.source_uri or image.original_name,
                }
            )
    return rows


def run(args: argparse.Namespace) -> int:
    catalog, settings = open_catalog(args)
    indexes = IndexStore(catalog, settings.index)
    try:
        store = open_vector_store(catalog, indexes, settings.index, settings.query)
    except BaseException:
        indexes.close(snapshot=False)
        catalog.close()
        raise
    try:
        record = catalog.get_collection(args.collection)
        model = collection_model(
            record, discovered_kind, ModelUse.IMAGE, requested=args.model or None
        )
        where = _metadata(args.where)
        options = DuplicateOptions(
            threshold=args.threshold,
            model=model,
            filters=ImageFilter(metadata=where) if where else None,
        )
        # Milvus's range search when it holds the vectors, else the local FAISS index's.
        finder = SearchService(catalog, indexes, {}, settings.query, store=store).duplicates
        scan = finder.scan(record.name, options)
        page = finder.page(
            scan, offset=0, limit=max(1, len(scan.groups)), prefer=KeeperRule(args.prefer)
        )
    finally:
        store.close()
        indexes.close()
        catalog.close()
    rows = _rows(page)
    if args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return 0
    if args.json:
        groups: dict[int, dict[str, Any]] = {}
        for row in rows:
            entry = groups.setdefault(
                row["group"], {"key": row["group_key"], "size": row["group_size"], "images": []}
            )
            entry["images"].append(
                {k: v for k, v in row.items() if k not in ("group", "group_key", "group_size")}
            )
        output = {
            "collection": scan.collection,
            "model": scan.model,
            "threshold": scan.threshold,
            "prefer": args.prefer,
            "approximate": scan.approximate,
            "scanned": scan.scanned,
            "pairs": scan.pairs,
            "groups": list(groups.values()),
        }
        print(json.dumps(output, indent=2))
        return 0
    if not page.groups:
        print(f"no near-duplicates in {scan.collection!r} at threshold {scan.threshold:g}")
        return 0
    for number, group in enumerate(page.groups, start=1):
        print(f"group {number}: {len(group.members)} images")
        for member in group.members:
            image = member.image
            mark = "keep" if member.keeper else "    "
            where_from = image.source_uri or image.original_name or "(upload)"
            print(
                f"  {mark} #{image.id:<8} {member.similarity:.4f}  {image.width}x{image.height} "
                f"{image.format} {image.byte_size:,} B  {where_from}"
            )
    extra = len(rows) - len(page.groups)
    print(
        f"{len(page.groups)} groups, {len(rows)} images ({extra} copies beside the keepers); "
        f"{scan.scanned} scanned with {scan.model} at threshold {scan.threshold:g}"
    )
    return 0
