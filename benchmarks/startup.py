"""Start-up through ``vizdex serve``: seconds from launching the server to its first answered
search over HTTP, with an index snapshot of ``--size`` vectors on disk.

Seeds a SQLite catalog with ``--size`` clustered unit vectors (the search benchmark's generator,
written a batch at a time), starts ``vizdex serve`` once so that it builds the index from the
catalog and snapshots it (at 1M vectors: IVF-PQ, re-ranked from its float16 vector file), stops
it, drops the index files from the page cache, then times ``--starts`` fresh starts: from
``Popen`` to the first ``200`` of ``POST /v1/collections/{name}/search`` with a vector query
(polled every 50 ms), and to ``/health/ready``. The server loads its model too (a CLIP of
ViT-B/32's shape with random weights: real cost, no download), as a real start does; a start
with an empty catalog (``empty_to_ready_s``) says how much of the time that is.

    python -m benchmarks.startup --size 1000000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from benchmarks.api import free_port, model_dir
from benchmarks.common import CACHE
from benchmarks.search import Synthetic
from vizdex.search import Catalog, CatalogSettings, NewImage
from vizdex.search.index_file import read_snapshot
from vizdex.search.index_slot import FILE_SUFFIX
from vizdex.search.settings import default_database_url

COLLECTION = "startup"
DIM = 512


@dataclass
class Start:
    size: int
    index_kind: str
    first_build_s: float
    to_ready_s: float
    to_first_search_s: float
    cold_page_cache: bool
    index_files_mb: float
    empty_to_ready_s: float  # the same server with an empty catalog: models and the rest


def seed(data_dir: Path, model: str, size: int, seed_value: int) -> None:
    """The catalog, written once per size (a marker file says it is complete)."""
    marker = data_dir / f"seeded-{size}"
    if marker.exists():
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog.open(CatalogSettings(default_database_url(data_dir)))
    try:
        record = catalog.create_collection(COLLECTION, [model])
        data = Synthetic(size, DIM, seed_value, cluster_size=10, noise=0.7, batch_size=5000)
        for ids, vectors in data.batches():
            catalog.add_images(
                record.id,
                [
                    NewImage(
                        sha256=hashlib.sha256(str(int(image)).encode()).hexdigest(),
                        width=640,
                        height=480,
                        format="JPEG",
                        byte_size=50_000,
                        vectors={model: vector},
                    )
                    for image, vector in zip(ids, vectors, strict=True)
                ],
            )
    finally:
        catalog.close()
    marker.touch()


def _environment(data_dir: Path, model: str) -> dict[str, str]:
    return {
        **os.environ,
        "VIZDEX_MODELS": model,
        "VIZDEX_DEVICE": "cpu",
        "VIZDEX_DATA_DIR": str(data_dir),
    }


def _launch(data_dir: Path, model: str, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "vizdex", "serve", "--host", "127.0.0.1", "--port"]
    return subprocess.Popen(
        [*command, str(port)],
        env=_environment(data_dir, model),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def timed_start(data_dir: Path, model: str, query: list[float]) -> tuple[float, float]:
    """(seconds to ``/health/ready``, seconds to the first answered search) of one fresh start,
    both from launching the process."""
    port = free_port()
    started = time.perf_counter()
    process = _launch(data_dir, model, port)
    ready: float | None = None
    body = {"vector": query, "k": 10}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the server exited with {process.returncode}")
                try:
                    if ready is None and client.get("/health/ready").status_code == 200:
                        ready = time.perf_counter() - started
                    if ready is not None:
                        response = client.post(f"/v1/collections/{COLLECTION}/search", json=body)
                        if response.status_code == 200 and len(response.json()["hits"]) == 10:
                            return ready, time.perf_counter() - started
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(600)


def time_to_ready(data_dir: Path, model: str) -> float:
    """One start until ``/health/ready`` (the server's own readiness: models and indexes)."""
    port = free_port()
    started = time.perf_counter()
    process = _launch(data_dir, model, port)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(600)  # shutting down writes the index snapshot


def drop_from_page_cache(folder: Path) -> float:
    """Advises the kernel to drop the index files' pages (a cold start); returns their MiB."""
    total = 0
    for path in folder.rglob("*"):
        if path.is_file():
            total += path.stat().st_size
            descriptor = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(descriptor)
    return total / 2**20


def index_kind(data_dir: Path) -> str:
    """The kind of index the snapshot on disk holds."""
    snapshots = list((data_dir / "indexes").rglob(f"*{FILE_SUFFIX}"))
    return str(read_snapshot(snapshots[0])[0]["spec"]["kind"]) if snapshots else "none"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--starts", type=int, default=3, help="timed fresh starts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="default benchmarks/.cache/startup-N")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    model = str(model_dir())
    data_dir = Path(args.data_dir or CACHE / f"startup-{args.size}")
    started = time.perf_counter()
    seed(data_dir, model, args.size, args.seed)
    print(f"catalog of {args.size:,} vectors ready in {time.perf_counter() - started:.1f} s")
    # The first start builds the index from the catalog (streamed) and snapshots it on exit.
    first_build = time_to_ready(data_dir, model)
    print(f"first start (builds the index from the catalog): ready in {first_build:.1f} s")
    query = Synthetic(args.size, DIM, args.seed, 10, 0.7).queries(1)[0].tolist()
    empty = time_to_ready(data_dir.with_name(data_dir.name + "-empty"), model)
    print(f"a start with an empty catalog: ready in {empty:.1f} s")
    results = []
    for _ in range(args.starts):
        megabytes = drop_from_page_cache(data_dir / "indexes")
        ready, first = timed_start(data_dir, model, query)
        result = Start(
            size=args.size,
            index_kind=index_kind(data_dir),
            first_build_s=round(first_build, 1),
            to_ready_s=round(ready, 2),
            to_first_search_s=round(first, 2),
            cold_page_cache=True,
            index_files_mb=round(megabytes, 1),
            empty_to_ready_s=round(empty, 2),
        )
        print(json.dumps(asdict(result)), flush=True)
        results.append(result)
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs: {args.size:,} vectors "
        f"({results[0].index_kind}), first answered search over HTTP "
        f"{min(r.to_first_search_s for r in results)}-"
        f"{max(r.to_first_search_s for r in results)} s after `vizdex serve` was launched "
        f"(an empty catalog: ready in {empty:.1f} s)"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump([asdict(r) for r in results], handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
