"""``vizdex gc``: remove files no catalog row references and prune tombstones."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from vizdex.cli.options import add_data_option, command_env, finite_float, open_storage
from vizdex.core.errors import InvalidInputError, StorageFullError
from vizdex.indexer import DataStore, IndexerSettings, SweepReport


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "gc",
        help="remove files no image references and prune tombstones",
        description=(
            "Sweep the data directory: thumbnails and stored originals that no image row of any "
            "collection references (left by a crash between a delete's commit and its unlink) "
            "are removed; tombstones every index snapshot includes are pruned (each index is "
            "snapshotted first); finished jobs older than VIZDEX_JOB_RETENTION_S (30 days) are "
            "deleted. A server does the same every VIZDEX_GC_INTERVAL_S."
        ),
    )
    parser.add_argument(
        "--grace",
        type=finite_float,
        default=None,
        metavar="SECONDS",
        help="keep files younger than this, which an ingest in flight may be about to reference "
        "(default VIZDEX_GC_GRACE_S, 600); 0 when nothing else writes",
    )
    parser.add_argument(
        "--vacuum",
        action="store_true",
        help="also give the catalog's free pages back to the file system (SQLite VACUUM, "
        "PostgreSQL VACUUM); takes the write lock for a moment",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_data_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.grace is not None and args.grace < 0:
        raise InvalidInputError(f"--grace must be >= 0, got {args.grace}")
    try:
        report = _sweep(args)
    except StorageFullError:
        # The sweep is what a full disk calls for, yet opening the catalog needs room (SQLite
        # makes its WAL files): the data directory's reserve is kept for moments like this.
        store = DataStore(IndexerSettings.from_env(command_env(args)).data_dir)
        if not store.release_reserve():
            raise
        try:
            report = _sweep(args)
        finally:
            store.keep_reserve()
    if args.json:
        print(json.dumps(asdict(report), indent=2))
        return 0
    print(
        f"removed {report.files_removed:,} files ({report.bytes_freed:,} bytes), kept "
        f"{report.files_kept_young:,} younger than the grace period; pruned "
        f"{report.tombstones_pruned:,} tombstones and {report.jobs_pruned:,} finished jobs"
    )
    print("catalog rows: " + ", ".join(f"{t} {n:,}" for t, n in report.rows.items()))
    return 0


def _sweep(args: argparse.Namespace) -> SweepReport:
    with open_storage(args) as (search, storage):
        report = storage.sweep(grace_s=args.grace)
        if args.vacuum:
            search.catalog.vacuum()
    return report
