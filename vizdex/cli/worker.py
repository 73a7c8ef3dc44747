"""``vizdex worker``: run chunks of queued ingestion jobs, on any machine that sees the catalog.

Start as many as there are machines (or GPUs) to ingest with: each loads the models, claims one
chunk at a time from the catalog's work queue under a lease, and runs it. A worker that is killed
loses its lease; another takes its chunk over once the lease has run out. SIGTERM or Ctrl-C hands
the current chunk back at once and exits.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from dataclasses import replace
from types import FrameType

from vizdex.cli.options import (
    add_data_option,
    add_encoder_options,
    check_models,
    command_env,
    encoder_settings,
    finite_float,
    open_catalog,
    quiet_model_loading,
)
from vizdex.core.errors import InvalidInputError
from vizdex.encoders.loading import load_encoders
from vizdex.imaging.settings import ImageInputSettings
from vizdex.indexer import Indexer, IndexerSettings, QueueWorker, WorkerOptions

log = logging.getLogger(__name__)

MAX_POLL_S = 3600.0


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "worker",
        help="run queued ingestion jobs (vizdex ingest --enqueue, uploads to replicas)",
        description=(
            "Claim chunks of queued ingestion jobs from the catalog and run them, until stopped. "
            "Every worker needs the catalog (VIZDEX_DATABASE_URL), the data directory "
            "(VIZDEX_DATA_DIR, shared with the servers) and the collections' models."
        ),
    )
    parser.add_argument(
        "--lease",
        type=finite_float,
        metavar="SECONDS",
        help="how long a chunk stays this worker's without a heartbeat (default "
        "VIZDEX_WORKER_LEASE_S, else 30): after a crash, another worker takes the chunk over "
        "once this has run out",
    )
    parser.add_argument(
        "--poll", type=finite_float, default=1.0, metavar="SECONDS", help="idle wait (default 1)"
    )
    parser.add_argument(
        "--until-idle", action="store_true", help="exit when no chunk is left to claim"
    )
    parser.add_argument("--name", help="the worker's name in leases (default host:pid:random)")
    parser.add_argument(
        "--workers", type=int, metavar="N", help="decode threads (default: one per core)"
    )
    add_data_option(parser)
    add_encoder_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    env = command_env(args)
    settings = IndexerSettings.from_env(env)
    if args.lease is not None:  # checked as the setting is (finite, bounded)
        settings = replace(settings, worker_lease_s=args.lease)
    lease = settings.worker_lease_s
    if not 0 < args.poll <= MAX_POLL_S:  # NaN would spin, inf crash the idle wait
        raise InvalidInputError(f"--poll must be more than 0 and at most {MAX_POLL_S:g} seconds")
    models = encoder_settings(args)
    check_models(models.models)
    settings = replace(settings, batch_size=models.batch_size)
    if args.workers is not None:
        settings = replace(settings, workers=args.workers)
    logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
    quiet_model_loading(args)
    catalog, _ = open_catalog(args)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: handing the current chunk back and stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        encoders = load_encoders(models)
        indexer = Indexer(catalog, None, encoders, settings, ImageInputSettings.from_env(env))
        worker = QueueWorker(
            catalog,
            indexer.run_chunk,
            indexer.store,
            WorkerOptions(lease_s=lease, poll_s=args.poll),
            name=args.name,
        )
        log.info("worker %s ready with models %s", worker.name, ", ".join(encoders))
        chunks = worker.run(stop, until_idle=args.until_idle)
        log.info("worker %s stops after %d chunks", worker.name, chunks)
    finally:
        catalog.close()
    return 0
