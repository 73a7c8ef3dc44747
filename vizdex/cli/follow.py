"""``vizdex follow``: stream the catalog's change feed into Milvus (the Milvus follower)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from types import FrameType

from vizdex.cli.options import add_data_option, finite_float, open_catalog
from vizdex.core.errors import InvalidInputError, VizdexError
from vizdex.search.vector_store import is_milvus, open_milvus

log = logging.getLogger(__name__)


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "follow",
        help="keep Milvus in step with the catalog (VIZDEX_VECTOR_STORE=milvus://...)",
        description=(
            "Apply the catalog's vectors and deletions to Milvus in batches of "
            "VIZDEX_MILVUS_BATCH sequence numbers, recording after each batch how far it got; "
            "a restarted follower resumes there. One follower runs at a time (on PostgreSQL "
            "the others wait for its advisory lock). `vizdex serve` with Milvus follows too."
        ),
    )
    parser.add_argument("--once", action="store_true", help="catch up once, then exit")
    parser.add_argument(
        "--interval", type=finite_float, default=1.0, metavar="S", help="seconds between rounds"
    )
    parser.add_argument("--json", action="store_true", help="print JSON (with --once)")
    add_data_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    catalog, settings = open_catalog(args)
    try:
        if not is_milvus(settings.index.vector_store):
            raise InvalidInputError(
                "vizdex follow streams the catalog into Milvus: set VIZDEX_VECTOR_STORE to "
                "milvus://host:19530 or a milvus-lite .db file"
            )
        store = open_milvus(catalog, settings.index)
        try:
            if args.once:
                # A follower killed a moment ago holds its SQLite lease until it lapses.
                if not store.wait_to_lead(store.lease_s + 2.0):
                    print(
                        "vizdex: another process follows the catalog into this Milvus; "
                        "nothing done",
                        file=sys.stderr,
                    )
                    return 1
                store.follow()
                applied = {str(k): v for k, v in sorted(store.applied_seqs().items())}
                if args.json:
                    print(json.dumps({"store": store.target.key, "applied_seq": applied}))
                else:
                    for collection_id, seq in applied.items():
                        print(f"collection {collection_id}: applied up to {seq}")
                return 0
            stop = threading.Event()

            def on_signal(signum: int, frame: FrameType | None) -> None:
                stop.set()

            signal.signal(signal.SIGTERM, on_signal)
            while not stop.is_set():
                try:
                    store.follow()
                except VizdexError:  # Milvus or the database away for a moment: next round
                    log.exception("following the catalog into Milvus failed")
                stop.wait(args.interval)
        finally:
            store.close()
    finally:
        catalog.close()
    return 0
