"""Vector search speed: exact (flat) vs IVF, with IVF's recall@10 measured against exact.

Runs the same ``search.index.VectorIndex`` the service uses, on random unit vectors clustered in
two levels, as photo embeddings are (themes > events/bursts > near-duplicates): topics, clusters
around each topic, ``--cluster-size`` vectors around each cluster. Queries are new
vectors drawn the same way, not taken from the index. Single-query latency is what one API
request sees; the batched figure is the throughput ceiling when queries are grouped.

    python -m benchmarks.search --sizes 100000,1000000 --queries 300
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from vizdex.search.index import IndexBackend, IndexPolicy, VectorIndex


@dataclass
class Measurement:
    size: int
    kind: str
    device: str
    build_s: float
    nlist: int
    nprobe: int
    queries: int
    qps_single: float
    p50_ms: float
    p99_ms: float
    qps_batch: float
    recall_at_10: float


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def clustered(
    rng: np.random.Generator, count: int, centers: np.ndarray, noise: float, chunk: int = 100_000
) -> np.ndarray:
    """Unit vectors around random centres, generated in chunks to bound temporary memory."""
    dim = centers.shape[1]
    out = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, chunk):
        stop = min(count, start + chunk)
        picked = centers[rng.integers(len(centers), size=stop - start)]
        noise_part = rng.standard_normal((stop - start, dim), dtype=np.float32)
        out[start:stop] = _normalise(picked + noise_part * np.float32(noise / np.sqrt(dim)))
    return out


def time_queries(
    index: VectorIndex, queries: np.ndarray, k: int
) -> tuple[np.ndarray, list[float], float]:
    """(ids from single queries, per-query seconds, batched seconds)."""
    found = np.empty((len(queries), k), dtype=np.int64)
    latencies = []
    for row in range(len(queries)):
        started = time.perf_counter()
        _, ids = index.search(queries[row : row + 1], k)
        latencies.append(time.perf_counter() - started)
        found[row] = ids[0]
    started = time.perf_counter()
    index.search(queries, k)
    return found, latencies, time.perf_counter() - started


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(a, b)) for a, b in zip(found, truth, strict=True))
    return hits / truth.size


def measure(
    kind: str,
    index: VectorIndex,
    build_s: float,
    queries: np.ndarray,
    k: int,
    truth: np.ndarray | None,
) -> tuple[Measurement, np.ndarray]:
    found, latencies, batch_s = time_queries(index, queries, k)
    ms = np.asarray(latencies) * 1000
    result = Measurement(
        size=index.ntotal,
        kind=kind,
        device=index.device,
        build_s=round(build_s, 2),
        nlist=index.spec.nlist,
        nprobe=index.spec.nprobe,
        queries=len(queries),
        qps_single=round(len(queries) / float(np.sum(latencies)), 1),
        p50_ms=round(float(np.percentile(ms, 50)), 3),
        p99_ms=round(float(np.percentile(ms, 99)), 3),
        qps_batch=round(len(queries) / batch_s, 1),
        recall_at_10=1.0 if truth is None else round(recall(found[:, :10], truth[:, :10]), 4),
    )
    return result, found


def run(
    sizes: Sequence[int],
    query_count: int,
    dim: int,
    k: int,
    seed: int,
    device: str,
    cluster_size: int,
    noise: float,
) -> list[Measurement]:
    backend = IndexBackend.detect(device)
    results: list[Measurement] = []
    for size in sizes:
        rng = np.random.default_rng(seed)
        started = time.perf_counter()
        topics = _normalise(rng.standard_normal((max(1, size // 1000), dim), dtype=np.float32))
        centers = clustered(rng, max(10, size // cluster_size), topics, noise=1.0)
        vectors = clustered(rng, size, centers, noise=noise)
        queries = clustered(rng, query_count, centers, noise=noise)
        print(f"[{size:,}] data generated in {time.perf_counter() - started:.1f} s", flush=True)
        ids = np.arange(1, size + 1, dtype=np.int64)

        started = time.perf_counter()
        flat = VectorIndex.build(ids, vectors, IndexPolicy(exact_max=size), backend, last_seq=0)
        flat_result, truth = measure("flat", flat, time.perf_counter() - started, queries, k, None)
        del flat
        print(json.dumps(asdict(flat_result)), flush=True)

        started = time.perf_counter()
        policy = IndexPolicy(exact_max=0, seed=seed)
        ivf = VectorIndex.build(ids, vectors, policy, backend, last_seq=0)
        ivf_result, _ = measure("ivf", ivf, time.perf_counter() - started, queries, k, truth)
        del ivf, vectors
        print(json.dumps(asdict(ivf_result)), flush=True)
        results += [flat_result, ivf_result]
    return results


def print_table(results: Sequence[Measurement]) -> None:
    header = (
        f"{'size':>10} {'index':>5} {'dev':>4} {'build s':>8} {'nlist':>6} {'nprobe':>6} "
        f"{'q/s 1x1':>9} {'p50 ms':>8} {'p99 ms':>8} {'q/s batch':>10} {'recall@10':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.size:>10,} {r.kind:>5} {r.device:>4} {r.build_s:>8.1f} {r.nlist:>6} "
            f"{r.nprobe:>6} {r.qps_single:>9.1f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{r.qps_batch:>10.1f} {r.recall_at_10:>9.4f}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated counts")
    parser.add_argument("--queries", type=int, default=300, help="held-out queries per size")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument(
        "--cluster-size",
        type=int,
        default=10,
        help="vectors per cluster (clusters sit in topics of about 100 clusters each)",
    )
    parser.add_argument("--noise", type=float, default=0.7, help="spread within a cluster")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"dim {args.dim}, k {args.k}, {args.queries} queries, "
        f"{args.cluster_size} vectors per cluster, noise {args.noise}",
        flush=True,
    )
    results = run(
        sizes,
        args.queries,
        args.dim,
        args.k,
        args.seed,
        args.device,
        args.cluster_size,
        args.noise,
    )
    print()
    print_table(results)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump([asdict(r) for r in results], handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
