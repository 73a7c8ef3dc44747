"""``vizdex ingest``: folders, files and URLs into a collection; ``vizdex jobs``: their progress."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any

from vizdex.cli.options import (
    add_data_option,
    add_encoder_options,
    check_models,
    command_env,
    create_collection,
    encoder_settings,
    open_catalog,
    quiet_model_loading,
)
from vizdex.encoders.base import Encoder
from vizdex.encoders.loading import load_encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.imaging.settings import ImageInputSettings
from vizdex.indexer import (
    DEFAULT_EXTENSIONS,
    DataStore,
    Indexer,
    IndexerSettings,
    IngestRequest,
    JobLocks,
    TextProgress,
    job_json,
    job_out,
    reap_interrupted,
    resolve_inputs,
)
from vizdex.indexer.queue import CHUNK_SIZE, cancel_job
from vizdex.search import (
    Catalog,
    CollectionNotFoundError,
    CollectionRecord,
    IndexStore,
    InvalidQueryError,
)
from vizdex.search.vector_store import is_milvus, open_milvus


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "ingest",
        help="add folders, image files or URLs to a collection",
        description=(
            "Add images to a collection (created with --model, default VIZDEX_MODELS, if it does "
            "not exist). Folders are scanned recursively; a re-run skips files whose path, size "
            "and mtime are unchanged, re-embeds changed ones and records moved ones without "
            "re-embedding. An interrupted run (even killed) is resumed by running it again. "
            "Exits 0 when the job completes, even if some files were refused: they are listed."
        ),
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="folder, image file, or http(s) URL (needs VIZDEX_ALLOW_URLS=true)",
    )
    parser.add_argument("--collection", "-c", required=True, metavar="NAME")
    parser.add_argument(
        "--prune",
        action="store_true",
        help="remove images whose files under the given folders no longer exist",
    )
    parser.add_argument(
        "--files-from", metavar="FILE", help="also ingest the paths listed in FILE, one per line"
    )
    parser.add_argument(
        "--ext",
        metavar="EXT,...",
        help="file extensions a folder scan picks up (default VIZDEX_INGEST_EXTENSIONS, else "
        f"{','.join(DEFAULT_EXTENSIONS)})",
    )
    parser.add_argument(
        "--include-hidden", action="store_true", help="also scan dot-files and dot-folders"
    )
    parser.add_argument(
        "--workers", type=int, metavar="N", help="decode threads (default: one per core)"
    )
    parser.add_argument(
        "--enqueue",
        action="store_true",
        help="list the files and queue them in chunks for `vizdex worker`s (on any machine that "
        "sees the files and the catalog) instead of ingesting here; prints the job and exits",
    )
    parser.add_argument(
        "--ray",
        metavar="auto|ray://HOST:10001",
        help="decode and embed on a Ray cluster (Ray Data tasks decode, an actor pool runs the "
        "models; needs `vizdex[ray]` here and on the workers, the files at the same paths); "
        "discovery and the catalog writes stay here, so a rerun resumes; folders and files only",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=CHUNK_SIZE,
        metavar="N",
        help=f"files per queued chunk (default {CHUNK_SIZE})",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_data_option(parser)
    add_encoder_options(parser)
    parser.set_defaults(handler=run)

    jobs = subcommands.add_parser(
        "jobs",
        help="show ingestion jobs and their progress",
        description="List recent jobs (newest first), or one job with its failures (--id).",
    )
    jobs.add_argument("--id", type=int, dest="job_id", metavar="N", help="show one job")
    jobs.add_argument(
        "--cancel",
        type=int,
        metavar="N",
        help="stop job N wherever it runs (it ends after its current batch) and show it",
    )
    jobs.add_argument("--collection", "-c", metavar="NAME", help="only this collection's jobs")
    jobs.add_argument("--limit", type=int, default=20, help="how many jobs to list (default 20)")
    jobs.add_argument("--json", action="store_true", help="print JSON")
    add_data_option(jobs)
    jobs.set_defaults(handler=run_jobs)


def _request(args: argparse.Namespace) -> IngestRequest:
    urls = tuple(p for p in args.paths if p.lower().startswith(("http://", "https://")))
    paths = tuple(p for p in args.paths if p not in urls)
    return IngestRequest(paths=paths, files_from=args.files_from, urls=urls, prune=args.prune)


def _collection(
    catalog: Catalog, args: argparse.Namespace, settings: EncoderSettings
) -> tuple[CollectionRecord, bool]:
    """The collection, created with the requested models when it does not exist yet."""
    try:
        record = catalog.get_collection(args.collection)
    except CollectionNotFoundError:
        check_models(settings.models)
        return create_collection(catalog, args.collection, settings.models), True
    if args.models and set(settings.models) != set(record.models):
        raise InvalidQueryError(
            f"collection {record.name!r} is embedded with {list(record.models)}, not "
            f"{list(settings.models)}; leave out --model or use another collection"
        )
    return record, False


def run(args: argparse.Namespace) -> int:
    env = command_env(args)
    models = encoder_settings(args)
    indexer_settings = IndexerSettings.from_env(env)
    overrides: dict[str, Any] = {
        "batch_size": models.batch_size,
        "include_hidden": args.include_hidden or indexer_settings.include_hidden,
    }
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.ext:
        overrides["extensions"] = tuple(args.ext.split(","))
    indexer_settings = replace(indexer_settings, **overrides)
    request = _request(args)
    resolve_inputs(request.paths, request.files_from)  # a typo fails before anything is loaded
    quiet_model_loading(args)
    if args.ray is not None and args.enqueue:
        raise InvalidQueryError("--ray runs the ingest here on a Ray cluster: leave out --enqueue")
    catalog, search_settings = open_catalog(args, create=True)
    if args.enqueue:
        try:
            return _enqueue(
                catalog, args, models, indexer_settings, ImageInputSettings.from_env(env)
            )
        finally:
            catalog.close()
    try:
        record, created = _collection(catalog, args, models)
        encoders: dict[str, Encoder] = {name: load_encoder(name, models) for name in record.models}
        # With Milvus the follower applies the writes: no local FAISS index to keep up.
        milvus = is_milvus(search_settings.index.vector_store)
        indexes = None if milvus else IndexStore(catalog, search_settings.index)
        try:
            indexer = Indexer(
                catalog, indexes, encoders, indexer_settings, ImageInputSettings.from_env(env)
            )
            progress = None if args.quiet else TextProgress(sys.stderr)
            try:
                report = indexer.ingest(
                    record.name, request, progress=progress, ray_address=args.ray
                )
            except BaseException:
                if progress is not None:
                    progress.abort()
                raise
            if progress is not None:
                progress.finish(report.snapshot())
        finally:
            if indexes is not None:
                indexes.close()
        if milvus:  # into Milvus now, unless another process is the follower
            store = open_milvus(catalog, search_settings.index)
            try:
                store.catch_up(catalog.get_collection(record.name))
            finally:
                store.close()
    finally:
        catalog.close()
    if args.json:
        print(json.dumps({**report.to_dict(), "created_collection": created}, indent=2))
    else:
        if created:
            print(f"created collection {record.name!r} with models: {', '.join(record.models)}")
        print("\n".join(report.summary()))
    return 0


def _enqueue(
    catalog: Catalog,
    args: argparse.Namespace,
    models: EncoderSettings,
    settings: IndexerSettings,
    images: ImageInputSettings,
) -> int:
    """Queue the ingestion for workers; no model is loaded here."""
    if args.chunk_size < 1:
        raise InvalidQueryError("--chunk-size must be at least 1")
    record, created = _collection(catalog, args, models)
    indexer = Indexer(catalog, None, {}, settings, images)
    job = indexer.enqueue(record.name, _request(args), chunk_size=args.chunk_size)
    if args.json:
        print(json.dumps({**job_json(job_out(job, record.name)), "created_collection": created}))
    else:
        if created:
            print(f"created collection {record.name!r} with models: {', '.join(record.models)}")
        print(
            f"queued job {job.id}: {job.total:,} files for `vizdex worker`s "
            f"(follow it with `vizdex jobs --id {job.id}`)"
        )
    return 0


def run_jobs(args: argparse.Namespace) -> int:
    catalog, _ = open_catalog(args)
    try:
        # A job whose process died still says "running": settle that before showing it.
        data_dir = IndexerSettings.from_env(command_env(args)).data_dir
        reap_interrupted(catalog, JobLocks(DataStore(data_dir).locks_dir))
        names = {record.id: record.name for record in catalog.list_collections()}
        if args.cancel is not None:
            args.job_id = args.cancel
            jobs = [cancel_job(catalog, DataStore(data_dir), args.cancel)]
        elif args.job_id is not None:
            jobs = [catalog.get_job(args.job_id)]
        else:
            collection_id = catalog.get_collection(args.collection).id if args.collection else None
            jobs = catalog.list_jobs(collection_id=collection_id, limit=max(1, args.limit))
    finally:
        catalog.close()
    rows = [job_json(job_out(job, names.get(job.collection_id, "?"))) for job in jobs]
    if args.json:
        print(json.dumps(rows if args.job_id is None else rows[0], indent=2))
        return 0
    if not rows:
        print("no jobs yet")
    for row in rows:
        counts = f"{row['done']:,} done, {row['skipped']:,} skipped, {row['failed']:,} failed"
        print(
            f"job {row['id']}  {row['state']:<9} {row['collection']}  "
            f"{counts} of {row['total']:,}  ({row['kind']}: {row['source']})"
        )
        if row["error"]:
            print(f"  error: {row['error']}")
        if args.job_id is not None:
            for failure in row["failures"]:
                print(f"  {failure['code']}: {failure['item']}: {failure['message']}")
    return 0
