"""The HTTP API under load: micro-batching vs none, and text-search latency at 100k vectors.

Each configuration runs as a real ``vizdex serve`` subprocess on loopback (so clients and server
do not share a GIL), with a CLIP of ViT-B/32's full shape (random weights: real cost, no
download). Part 1: ``--clients`` concurrent clients each send ``--requests`` single-image
``/v1/vision/encode`` requests, once with micro-batching and once with it off
(``VIZDEX_MAX_BATCH=0``), same server build, same run. Part 2: ``--queries`` text searches, one
at a time, over HTTP against a collection of ``--vectors`` indexed vectors.

    python -m benchmarks.api --clients 64 --requests 4 --vectors 100000 --queries 200
    python -m benchmarks.api --dtype float32,bfloat16,int8   # text search in each precision
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np

from benchmarks.common import CACHE, add_dtype_option
from tests.support.synthetic_photos import jpeg_bytes, make_photo
from tests.support.tiny_models import make_vit_b32_clip
from vizdex.search import Catalog, CatalogSettings, NewImage
from vizdex.search.settings import default_database_url

COLLECTION = "bench"
DIM = 512  # ViT-B/32 CLIP projection


@dataclass
class EncodeLoad:
    mode: str
    clients: int
    requests: int
    seconds: float
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    mean_batch: float | None
    errors: int


@dataclass
class SearchLatency:
    dtype: str
    vectors: int
    queries: int
    p50_ms: float
    p99_ms: float
    mean_ms: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def model_dir() -> Path:
    directory = CACHE / "clip-vit-b32-random"
    if not (directory / "config.json").exists():
        make_vit_b32_clip(directory)
    return directory


def seed_catalog(data_dir: Path, model: str, count: int, seed: int = 0) -> None:
    """``count`` random unit vectors in one collection, written straight to the catalog once."""
    marker = data_dir / f"seeded-{count}"
    if marker.exists():
        return
    catalog = Catalog.open(CatalogSettings(default_database_url(data_dir)))
    try:
        record = catalog.create_collection(COLLECTION, [model])
        rng = np.random.default_rng(seed)
        for start in range(0, count, 5000):
            size = min(5000, count - start)
            vectors = rng.standard_normal((size, DIM), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            catalog.add_images(
                record.id,
                [
                    NewImage(
                        sha256=hashlib.sha256(f"{start + i}".encode()).hexdigest(),
                        width=640,
                        height=480,
                        format="JPEG",
                        byte_size=50_000,
                        vectors={model: vectors[i]},
                        metadata={"n": start + i},
                    )
                    for i in range(size)
                ],
            )
    finally:
        catalog.close()
    marker.touch()


@contextmanager
def server(data_dir: Path, model: str, max_batch: int, dtype: str = "auto") -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "VIZDEX_MODELS": model,
        "VIZDEX_DEVICE": "cpu",
        "VIZDEX_DATA_DIR": str(data_dir),
        "VIZDEX_MAX_BATCH": str(max_batch),
        "VIZDEX_MAX_WAIT_MS": "5",
        "VIZDEX_DTYPE": dtype,
    }
    command = [sys.executable, "-m", "vizdex", "serve", "--host", "127.0.0.1"]
    process = subprocess.Popen([*command, "--port", str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}")
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(60)


def mean_batch(url: str) -> float | None:
    text = httpx.get(f"{url}/metrics").text
    total = re.search(r'^vizdex_batch_size_sum\{input="image"[^}]*\} (\S+)$', text, re.M)
    count = re.search(r'^vizdex_batch_size_count\{input="image"[^}]*\} (\S+)$', text, re.M)
    if not total or not count or float(count.group(1)) == 0:
        return None
    return float(total.group(1)) / float(count.group(1))


async def encode_load(url: str, clients: int, per_client: int, image: str) -> list[float]:
    """Latencies (s) of ``clients`` x ``per_client`` single-image requests; -1 for a failure."""
    body = {"images": [image]}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as client:

        async def one_client() -> list[float]:
            times = []
            for _ in range(per_client):
                started = time.perf_counter()
                response = await client.post("/v1/vision/encode", json=body)
                ok = response.status_code == 200
                times.append(time.perf_counter() - started if ok else -1.0)
            return times

        await client.post("/v1/vision/encode", json=body)  # connection and thread warm-up
        results = await asyncio.gather(*(one_client() for _ in range(clients)))
    return [t for times in results for t in times]


def run_encode(url: str, mode: str, clients: int, per_client: int, image: str) -> EncodeLoad:
    started = time.perf_counter()
    latencies = asyncio.run(encode_load(url, clients, per_client, image))
    seconds = time.perf_counter() - started
    ok = np.asarray([t for t in latencies if t >= 0]) * 1000
    return EncodeLoad(
        mode=mode,
        clients=clients,
        requests=len(latencies),
        seconds=round(seconds, 2),
        throughput_rps=round(len(ok) / seconds, 1),
        p50_ms=round(float(np.percentile(ok, 50)), 1),
        p99_ms=round(float(np.percentile(ok, 99)), 1),
        mean_batch=None if mode == "direct" else mean_batch(url),
        errors=len(latencies) - len(ok),
    )


def query_texts(count: int, seed: int = 1) -> list[str]:
    """``count`` different short queries: no query repeats, so no cache could answer one."""
    words = ["red", "bicycle", "snow", "dog", "beach", "city", "night", "forest", "car", "cat"]
    rng = np.random.default_rng(seed)
    texts: dict[str, None] = {}
    while len(texts) < count:
        size = len(texts) // len(words) ** 3 + 3  # every 3-word query taken: go to 4 words
        texts[" ".join(rng.choice(words, size=size))] = None
    return list(texts)


def run_search(urls: dict[str, str], vectors: int, queries: int) -> list[SearchLatency]:
    """Text searches over HTTP, one at a time, alternating between the servers (one per
    precision, all up at once): each query goes to every server back to back, so the
    machine's drift reaches every precision alike."""
    texts = query_texts(queries + 10)
    warm, measured = texts[:10], texts[10:]
    latencies: dict[str, list[float]] = {dtype: [] for dtype in urls}
    clients = {dtype: httpx.Client(base_url=url, timeout=60) for dtype, url in urls.items()}
    try:
        for text in warm:
            for client in clients.values():
                client.post(f"/v1/collections/{COLLECTION}/search", json={"text": text})
        for i, text in enumerate(measured):
            order = list(clients.items())
            if i % 2:
                order.reverse()  # neither precision always runs right after the other
            for dtype, client in order:
                started = time.perf_counter()
                response = client.post(
                    f"/v1/collections/{COLLECTION}/search", json={"text": text, "k": 10}
                )
                latencies[dtype].append(time.perf_counter() - started)
                response.raise_for_status()
                assert len(response.json()["hits"]) == 10
    finally:
        for client in clients.values():
            client.close()
    results = []
    for dtype, times in latencies.items():
        ms = np.asarray(times) * 1000
        results.append(
            SearchLatency(
                dtype=dtype,
                vectors=vectors,
                queries=queries,
                p50_ms=round(float(np.percentile(ms, 50)), 1),
                p99_ms=round(float(np.percentile(ms, 99)), 1),
                mean_ms=round(float(ms.mean()), 1),
            )
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    add_dtype_option(parser)  # encode load in the first; text search in each
    args = parser.parse_args()

    model = str(model_dir())
    image = base64.b64encode(jpeg_bytes(make_photo(640, 480, seed=3))).decode("ascii")
    data_dir = CACHE / f"api-{args.vectors}"
    seed_catalog(data_dir, model, args.vectors)
    encode: list[EncodeLoad] = []
    search: list[SearchLatency] = []
    for mode, max_batch in (("micro-batched", 32), ("direct", 0)):
        with server(data_dir, model, max_batch, args.dtype[0]) as url:
            encode.append(run_encode(url, mode, args.clients, args.requests, image))
    with ExitStack() as stack:
        urls = {
            dtype: stack.enter_context(server(data_dir, model, 32, dtype)) for dtype in args.dtype
        }
        search = run_search(urls, args.vectors, args.queries)
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "encode": [asdict(e) for e in encode],
        "speedup": round(encode[0].throughput_rps / encode[1].throughput_rps, 2),
        "text_search": [asdict(latency) for latency in search],
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"{args.clients} clients x {args.requests} single-image encode requests (ViT-B/32):")
    for e in encode:
        batch = f", mean batch {e.mean_batch:.1f}" if e.mean_batch else ""
        print(
            f"  {e.mode:14s} {e.throughput_rps:7.1f} req/s  p50 {e.p50_ms:7.1f} ms"
            f"  p99 {e.p99_ms:7.1f} ms  errors {e.errors}{batch}"
        )
    print(f"  speed-up from micro-batching: {report['speedup']}x")
    slowest = max(latency.p50_ms for latency in search)
    for latency in search:
        print(
            f"text search over HTTP at {latency.vectors:,} vectors ({latency.queries} queries), "
            f"VIZDEX_DTYPE={latency.dtype}: p50 {latency.p50_ms} ms, p99 {latency.p99_ms} ms"
            f" (x{slowest / latency.p50_ms:.2f} the slowest p50)"
        )


if __name__ == "__main__":
    main()
