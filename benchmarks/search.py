"""Vector search speed and memory: exact (flat), IVF-Flat and the compressed policy (IVF-PQ
re-ranked with exact float16 vectors from a memory-mapped file), recall@10 against exact.

Runs the same ``search.index.VectorIndex`` the service uses, on random unit vectors clustered in
two levels, as photo embeddings are (themes > events/bursts > near-duplicates): topics, clusters
around each topic, ``--cluster-size`` vectors around each cluster. Queries are new
vectors drawn the same way, not taken from the index. Single-query latency is what one API
request sees; the batched figure is the throughput ceiling when queries are grouped.

Vectors are generated a batch at a time, the same on every pass (``Synthetic``), and indexes are
built from them as the service builds from the catalog (``VectorIndex.build_from``: a training
sample, then batches), so no step holds every vector: the ground truth is a streamed exact scan.
Exact and IVF-Flat hold every float32 vector themselves: past ``--float32-max-gb`` they are
skipped (at 10M × 512 they would need 20 GiB).

``rss_mb`` is how much the process's resident memory grew while the index was built and
searched; ``peak_rss_mb`` the whole process's peak (cluster centres, training sample and
batches included). The compressed
index is built in the background while IVF-Flat answers a query every ``--swap-interval-ms``, as
a retrain does in the service, then swapped in: ``swap_worst_ms`` is the slowest of those
queries, the first ones on the new index included; past ``--float32-max-gb`` there is no IVF-Flat
to serve, and ``--retrain-swap`` serves the compressed index itself while a second one is built.
It is then saved as the service saves it and opened by a fresh process, its files first dropped
from the page cache, which reports the time from start to its first answer (index
memory-mapped, no vector re-added), its single-query p50/p99 on those cold files
(``serving_p50_ms``), the same queries' p50 a second time, their rows then verified and cached
(``serving_again_p50_ms``), and its whole resident memory after those searches
(``serving_rss_mb``). For the IVF kinds, a single query's mean time is split into FAISS's coarse
quantizer and list scans (its own clocks) and the rest: re-ranking with exact vectors, Python.

    python -m benchmarks.search --sizes 100000,1000000 --queries 300
    python -m benchmarks.search --sizes 10000000 --queries 300 [--retrain-swap]

``--store milvus`` also measures Milvus on the same vectors and queries, through the same
``MilvusClient`` calls, index and search parameters the Milvus vector store uses, against a
milvus-lite file by default (``--milvus-uri`` for a server). milvus-lite is a single-process,
pure-Python Milvus that runs FAISS underneath: its figures say nothing about Milvus standalone or
a distributed cluster (C++ segments, query nodes, GPUs), only that vizdex's calls work and what
a laptop-sized local store costs.

    python -m benchmarks.search --sizes 100000 --store milvus --milvus-index HNSW,FLAT
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from vizdex.search.index import (
    ExactNeighbours,
    IndexBackend,
    IndexPolicy,
    VectorIndex,
    ivf_stage_ms,
)
from vizdex.search.vector_file import VectorFilePlace
from vizdex.search.vector_source import DEFAULT_BATCH


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
    rss_mb: float = 0.0
    rerank: int = 0
    swap_worst_ms: float | None = None
    start_to_first_query_s: float | None = None
    serving_p50_ms: float | None = None
    serving_p99_ms: float | None = None
    serving_rss_mb: float | None = None
    serving_anon_mb: float | None = None
    disk_mb: float | None = None
    index_disk_mb: float | None = None
    vector_disk_mb: float | None = None
    peak_rss_mb: float | None = None
    # Where a single query's mean time goes (IVF kinds): FAISS's coarse quantizer and list
    # scans by its own clocks, the rest (re-ranking with exact vectors, Python) by difference.
    quantizer_ms: float | None = None
    scan_ms: float | None = None
    rest_ms: float | None = None
    # The fresh process's same queries a second time: their rows verified and in the page cache.
    serving_again_p50_ms: float | None = None


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory (Linux), file-backed mapped pages included; ``VmHWM``:
    its peak so far."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def clustered(
    rng: np.random.Generator,
    count: int,
    centers: np.ndarray,
    noise: float,
    chunk: int = 100_000,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Unit vectors around random centres, generated in chunks to bound temporary memory."""
    dim = centers.shape[1]
    out = np.empty((count, dim), dtype=dtype)
    for start in range(0, count, chunk):
        stop = min(count, start + chunk)
        picked = centers[rng.integers(len(centers), size=stop - start)].astype(np.float32)
        noise_part = rng.standard_normal((stop - start, dim), dtype=np.float32)
        out[start:stop] = _normalise(picked + noise_part * np.float32(noise / np.sqrt(dim)))
    return out


class Synthetic:
    """``size`` clustered unit vectors generated a batch at a time, the same ones on every pass
    (each batch has its own seed): a build reads them as it reads the catalog, and no pass holds
    more than one batch. Only the cluster centres stay in memory (float16: 1 GiB at 10M)."""

    def __init__(
        self,
        size: int,
        dim: int,
        seed: int,
        cluster_size: int,
        noise: float,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        self.size = size
        self.seed = seed
        self.noise = noise
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        topics = _normalise(self.rng.standard_normal((max(1, size // 1000), dim), np.float32))
        clusters = max(10, size // cluster_size)
        self.centers = clustered(self.rng, clusters, topics, noise=1.0, dtype=np.float16)

    @property
    def count(self) -> int:
        return self.size

    def queries(self, count: int) -> np.ndarray:
        """New vectors drawn the same way, not in the collection."""
        return clustered(self.rng, count, self.centers, noise=self.noise)

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for number, start in enumerate(range(0, self.size, self.batch_size)):
            stop = min(self.size, start + self.batch_size)
            rng = np.random.default_rng([self.seed, 1, number])
            vectors = clustered(rng, stop - start, self.centers, self.noise, chunk=stop - start)
            yield np.arange(start + 1, stop + 1, dtype=np.int64), vectors


def exact_truth(data: Synthetic, queries: np.ndarray, k: int) -> np.ndarray:
    """Each query's exact top ``k`` ids, by a streamed scan over every vector."""
    neighbours = ExactNeighbours(queries, k)
    for ids, vectors in data.batches():
        neighbours.add(ids, vectors)
    return neighbours.ids


def time_queries(
    index: VectorIndex, queries: np.ndarray, k: int
) -> tuple[np.ndarray, list[float], float, tuple[float, float]]:
    """(ids from single queries, per-query seconds, batched seconds, the single queries' mean
    ms in FAISS's coarse quantizer and list scans)."""
    found = np.empty((len(queries), k), dtype=np.int64)
    latencies = []
    ivf_stage_ms()
    for row in range(len(queries)):
        started = time.perf_counter()
        _, ids = index.search(queries[row : row + 1], k)
        latencies.append(time.perf_counter() - started)
        found[row] = ids[0]
    quantizer, scan = (spent / max(1, len(queries)) for spent in ivf_stage_ms())
    started = time.perf_counter()
    index.search(queries, k)
    return found, latencies, time.perf_counter() - started, (quantizer, scan)


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
    rss_before: float,
) -> tuple[Measurement, np.ndarray]:
    found, latencies, batch_s, (quantizer_ms, scan_ms) = time_queries(index, queries, k)
    ms = np.asarray(latencies) * 1000
    staged = index.spec.nlist > 0
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
        rss_mb=round(rss_mb() - rss_before, 1),
        rerank=index.spec.rerank,
        quantizer_ms=round(quantizer_ms, 3) if staged else None,
        scan_ms=round(scan_ms, 3) if staged else None,
        rest_ms=round(float(ms.mean()) - quantizer_ms - scan_ms, 3) if staged else None,
    )
    return result, found


def wait_for_index(client: Any, name: str, timeout_s: float = 3600.0) -> None:
    """Until a Milvus server's index covers every row of ``name`` (or ``timeout_s`` passed)."""
    from vizdex.search.milvus_store import FIELD_VECTOR

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        described = client.describe_index(name, FIELD_VECTOR)
        if int(described.get("indexed_rows", 0)) >= int(described.get("total_rows", 0)):
            return
        time.sleep(1.0)
    raise RuntimeError(f"Milvus did not finish the index of {name} in {timeout_s:g} s")


def measure_milvus(
    uri: str,
    index_type: str,
    ids: np.ndarray,
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    truth: np.ndarray,
) -> Measurement:
    """Milvus with one index type: build (insert, flush, load), then the same queries."""
    from pymilvus import DataType, MilvusClient

    from vizdex.search.milvus_store import FIELD_VECTOR, index_params, search_params

    client = MilvusClient(uri=uri)
    name = f"bench_{index_type.lower()}_{len(ids)}"
    if client.has_collection(name):
        client.drop_collection(name)
    started = time.perf_counter()
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field(FIELD_VECTOR, DataType.FLOAT_VECTOR, dim=vectors.shape[1])
    params = client.prepare_index_params()
    params.add_index(
        field_name=FIELD_VECTOR,
        index_type=index_type,
        metric_type="IP",
        params=index_params(index_type, vectors.shape[1], len(ids)),
    )
    client.create_collection(name, schema=schema, index_params=params)
    for start in range(0, len(ids), 2000):
        rows = [
            {"id": int(i), FIELD_VECTOR: v.tolist()}
            for i, v in zip(ids[start : start + 2000], vectors[start : start + 2000], strict=True)
        ]
        client.insert(name, rows)
    client.flush(name)
    if not uri.endswith(".db"):  # a server builds asynchronously: the build ends when it covers
        wait_for_index(client, name)  # every row (lite builds on load, below)
    client.release_collection(name)
    client.load_collection(name)  # milvus-lite builds its segment indexes here
    build_s = time.perf_counter() - started
    search: dict[str, Any] = {"metric_type": "IP", "params": search_params(index_type, k)}
    found = np.full((len(queries), k), -1, dtype=np.int64)
    latencies = []
    for row, query in enumerate(queries):
        began = time.perf_counter()
        result = client.search(name, data=[query.tolist()], limit=k, search_params=search)
        latencies.append(time.perf_counter() - began)
        hits = [int(hit["id"]) for hit in result[0]]
        found[row, : len(hits)] = hits
    began = time.perf_counter()
    client.search(name, data=queries.tolist(), limit=k, search_params=search)
    batch_s = time.perf_counter() - began
    client.drop_collection(name)
    client.close()
    ms = np.asarray(latencies) * 1000
    return Measurement(
        size=len(ids),
        kind=f"milvus-{index_type.lower()}",
        device="lite" if uri.endswith(".db") else "server",
        build_s=round(build_s, 2),
        nlist=int(index_params(index_type, vectors.shape[1], len(ids)).get("nlist", 0)),
        nprobe=int(search["params"].get("nprobe", 0)),
        queries=len(queries),
        qps_single=round(len(queries) / float(np.sum(latencies)), 1),
        p50_ms=round(float(np.percentile(ms, 50)), 3),
        p99_ms=round(float(np.percentile(ms, 99)), 3),
        qps_batch=round(len(queries) / batch_s, 1),
        recall_at_10=round(recall(found[:, :10], truth[:, :10]), 4),
    )


def build_while_serving(
    serving: VectorIndex | None,
    build: Callable[[], VectorIndex],
    queries: np.ndarray,
    k: int,
    interval_s: float,
) -> tuple[VectorIndex, float, float | None]:
    """Builds an index in a thread while ``serving`` answers a query every ``interval_s``,
    swaps it in, and keeps querying a moment. Returns (index, build seconds, worst query ms);
    without ``serving`` (too big to build beside it), just the build."""
    if serving is None:
        started = time.perf_counter()
        built_alone = build()
        return built_alone, time.perf_counter() - started, None
    current = [serving]
    built: list[VectorIndex] = []
    worst = [0.0]
    stop = threading.Event()

    def load() -> None:
        row = 0
        while not stop.is_set():
            started = time.perf_counter()
            current[0].search(queries[row % len(queries) : row % len(queries) + 1], k)
            worst[0] = max(worst[0], time.perf_counter() - started)
            row += 1
            time.sleep(interval_s)

    thread = threading.Thread(target=load)
    thread.start()
    started = time.perf_counter()
    try:
        built.append(build())
        build_s = time.perf_counter() - started
        current[0] = built[0]  # the swap: one reference, as IndexStore's slot.index
        time.sleep(max(1.0, 50 * interval_s))  # the first queries on the new index count too
    finally:
        stop.set()
        thread.join()
    return built[0], build_s, worst[0] * 1000


START_SCRIPT = """
import json, sys, time
started = time.perf_counter()
from pathlib import Path
import numpy as np
from vizdex.search.index import IndexBackend, IndexSpec, VectorIndex
from vizdex.search.vector_file import VectorFilePlace
folder, fields, spec, seq, dim, queries, k = json.loads(sys.argv[1])
spec = IndexSpec.from_dict(spec)
index = VectorIndex.open_mapped(
    Path(folder) / fields["index_file"], spec, IndexBackend(use_gpu=False), last_seq=seq
)
place = VectorFilePlace(Path(folder) / "bench", 1, "bench")
index.attach_exact(place.open(fields["vector_file"], dim=dim, last_seq=seq))
queries = np.load(queries)
index.search(queries[:1], k)
first = time.perf_counter() - started
def single(queries):
    latencies = []
    for row in range(len(queries)):
        began = time.perf_counter()
        index.search(queries[row : row + 1], k)
        latencies.append(1000 * (time.perf_counter() - began))
    return latencies
latencies = single(queries)
memory = {f"p{q}_ms": float(np.percentile(latencies, q)) for q in (50, 99)}
memory["again_p50_ms"] = float(np.percentile(single(queries), 50))
for line in open("/proc/self/status"):
    if line.startswith(("VmRSS:", "RssAnon:", "RssFile:")):
        memory[line.split(":")[0]] = int(line.split()[1]) / 1024
print(json.dumps({"first_s": first, **memory}))
"""


@dataclass
class ServingFigures:
    first_s: float  # from a fresh process's start to its first answer
    p50_ms: float  # its single queries, on files that start cold
    p99_ms: float
    again_p50_ms: float  # the same queries a second time: rows verified, pages cached
    rss_mb: float  # resident after the queries
    anon_mb: float  # of which not file pages
    index_disk_mb: float
    vector_disk_mb: float


def start_from_snapshot(
    index: VectorIndex, folder: Path, queries: np.ndarray, k: int
) -> ServingFigures:
    """What a fresh process serving the index saved as the service saves it measures. The
    files are dropped from the page cache first: a cold start, and its queries read from disk
    whatever they touch first."""
    fields, spec, seq = index.save_files(folder / "bench")
    # Pages this process maps stay cached whatever it advises: unmap its exact vectors first.
    index.attach_exact(None)
    gc.collect()
    for key in ("index_file", "vector_file"):
        descriptor = os.open(folder / fields[key], os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)
    query_file = folder / "queries.npy"
    np.save(query_file, queries)
    argument = json.dumps([str(folder), fields, spec.to_dict(), seq, spec.dim, str(query_file), k])
    done = subprocess.run(
        [sys.executable, "-c", START_SCRIPT, argument],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    index_disk, vector_disk = (
        os.stat(folder / fields[key]).st_blocks * 512 / 2**20
        for key in ("index_file", "vector_file")
    )
    # The child's clock starts before its imports (numpy, faiss), after the interpreter's boot.
    return ServingFigures(
        first_s=round(report["first_s"], 2),
        p50_ms=round(report["p50_ms"], 3),
        p99_ms=round(report["p99_ms"], 3),
        again_p50_ms=round(report["again_p50_ms"], 3),
        rss_mb=round(report["VmRSS"], 1),
        anon_mb=round(report["RssAnon"], 1),
        index_disk_mb=round(index_disk, 1),
        vector_disk_mb=round(vector_disk, 1),
    )


def run(
    sizes: Sequence[int],
    query_count: int,
    dim: int,
    k: int,
    seed: int,
    device: str,
    cluster_size: int,
    noise: float,
    rerank: int = 10,
    swap_interval_s: float = 0.02,
    milvus_uri: str | None = None,
    milvus_indexes: Sequence[str] = (),
    float32_max_gb: float = 4.0,
    batch_size: int = DEFAULT_BATCH,
    retrain_swap: bool = False,
) -> list[Measurement]:
    """Every size's figures. Vectors are generated and read a batch at a time; exact and
    IVF-Flat, which hold every float32 vector, are built only up to ``float32_max_gb``."""
    backend = IndexBackend.detect(device)
    results: list[Measurement] = []
    for size in sizes:
        started = time.perf_counter()
        data = Synthetic(size, dim, seed, cluster_size, noise, batch_size)
        queries = data.queries(query_count)
        truth = exact_truth(data, queries, k)
        print(
            f"[{size:,}] centres and exact top-{k} of {query_count} queries (streamed scan) in "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )
        ivf: VectorIndex | None = None
        ivf_before = rss_mb()
        if size * dim * 4 <= float32_max_gb * 2**30:
            before = rss_mb()
            started = time.perf_counter()
            flat = VectorIndex.build_from(
                data, IndexPolicy(exact_max=size), backend, last_seq=0, dim=dim
            )
            flat_result, _ = measure(
                "flat", flat, time.perf_counter() - started, queries, k, truth, before
            )
            del flat
            print(json.dumps(asdict(flat_result)), flush=True)

            ivf_before = before = rss_mb()
            started = time.perf_counter()
            policy = IndexPolicy(exact_max=0, seed=seed)
            ivf = VectorIndex.build_from(data, policy, backend, last_seq=0, dim=dim)
            ivf_result, _ = measure(
                "ivf", ivf, time.perf_counter() - started, queries, k, truth, before
            )
            print(json.dumps(asdict(ivf_result)), flush=True)
            results += [flat_result, ivf_result]
        else:
            print(
                f"[{size:,}] exact and IVF-Flat skipped: they hold {size * dim * 4 / 2**30:.1f} "
                f"GiB of float32 (over --float32-max-gb {float32_max_gb})",
                flush=True,
            )

        with tempfile.TemporaryDirectory(prefix="vizdex-bench-") as folder:
            place = VectorFilePlace(Path(folder) / "bench", 1, "bench")
            compressed_policy = IndexPolicy(
                exact_max=0, compress_min=0, rerank=rerank, vector_place=place, seed=seed
            )
            compressed, build_s, worst_ms = build_while_serving(
                ivf,
                partial(
                    VectorIndex.build_from, data, compressed_policy, backend, last_seq=0, dim=dim
                ),
                queries,
                k,
                swap_interval_s,
            )
            del ivf
            # IVF-Flat's memory went with it: what grew since before it is the compressed one's.
            result, _ = measure("ivfpq", compressed, build_s, queries, k, truth, ivf_before)
            result.swap_worst_ms = None if worst_ms is None else round(worst_ms, 2)
            result.peak_rss_mb = round(rss_mb("VmHWM"), 1)
            print(json.dumps(asdict(result)), flush=True)
            if retrain_swap and worst_ms is None:
                # Nothing served while it was built: serve it while a retrain builds its
                # successor beside it (its own files), as a grown collection's retrain does.
                with tempfile.TemporaryDirectory(prefix="vizdex-bench-retrain-") as other:
                    retrain_policy = replace(
                        compressed_policy, vector_place=VectorFilePlace(Path(other) / "b", 1, "b")
                    )
                    successor, _, worst_ms = build_while_serving(
                        compressed,
                        partial(
                            VectorIndex.build_from,
                            data,
                            retrain_policy,
                            backend,
                            last_seq=0,
                            dim=dim,
                        ),
                        queries,
                        k,
                        swap_interval_s,
                    )
                    result.swap_worst_ms = None if worst_ms is None else round(worst_ms, 2)
                    successor.attach_exact(None)
                    del successor
                print(json.dumps(asdict(result)), flush=True)
            serving = start_from_snapshot(compressed, Path(folder), queries, k)
            result.start_to_first_query_s = serving.first_s
            result.serving_p50_ms = serving.p50_ms
            result.serving_p99_ms = serving.p99_ms
            result.serving_again_p50_ms = serving.again_p50_ms
            result.serving_rss_mb = serving.rss_mb
            result.serving_anon_mb = serving.anon_mb
            result.index_disk_mb = serving.index_disk_mb
            result.vector_disk_mb = serving.vector_disk_mb
            result.disk_mb = round(serving.index_disk_mb + serving.vector_disk_mb, 1)
            del compressed
        print(json.dumps(asdict(result)), flush=True)
        results.append(result)
        for index_type in milvus_indexes if milvus_uri else ():
            assert milvus_uri is not None
            ids, vectors = (np.concatenate(part) for part in zip(*data.batches(), strict=True))
            measured = measure_milvus(milvus_uri, index_type, ids, vectors, queries, k, truth)
            print(json.dumps(asdict(measured)), flush=True)
            results.append(measured)
    return results


def print_table(results: Sequence[Measurement]) -> None:
    header = (
        f"{'size':>10} {'index':>15} {'dev':>6} {'build s':>8} {'nlist':>6} {'nprobe':>6} "
        f"{'q/s 1x1':>9} {'p50 ms':>8} {'p99 ms':>8} {'q/s batch':>10} {'recall@10':>9} "
        f"{'RSS MiB':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.size:>10,} {r.kind:>15} {r.device:>6} {r.build_s:>8.1f} {r.nlist:>6} "
            f"{r.nprobe:>6} {r.qps_single:>9.1f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{r.qps_batch:>10.1f} {r.recall_at_10:>9.4f} {r.rss_mb:>8.0f}"
        )
    for r in results:
        if r.quantizer_ms is not None:
            print(
                f"{r.size:,} {r.kind}: a single query's mean {r.quantizer_ms} ms in the coarse "
                f"quantizer, {r.scan_ms} ms scanning lists, {r.rest_ms} ms the rest (re-ranking, "
                "Python)"
            )
    for r in results:
        if r.start_to_first_query_s is not None:
            print(
                f"{r.size:,} {r.kind} (rerank x{r.rerank}): worst query during the retrain swap "
                f"{r.swap_worst_ms} ms; a fresh process answers its first query "
                f"{r.start_to_first_query_s} s after start (snapshot memory-mapped, cold page "
                f"cache), then single queries at p50 {r.serving_p50_ms} ms / p99 "
                f"{r.serving_p99_ms} ms (the same queries again: p50 {r.serving_again_p50_ms} "
                f"ms), and holds {r.serving_rss_mb} MiB resident after "
                f"{2 * r.queries} queries "
                f"({r.serving_anon_mb} MiB of it anonymous, the rest mapped file pages); "
                f"files on disk {r.disk_mb} MiB (index {r.index_disk_mb}, vectors "
                f"{r.vector_disk_mb}); the whole benchmark process peaked at {r.peak_rss_mb} MiB"
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
    parser.add_argument("--rerank", type=int, default=10, help="compressed: candidates per hit")
    parser.add_argument(
        "--swap-interval-ms",
        type=float,
        default=20.0,
        help="while the compressed index builds, IVF-Flat answers a query this often",
    )
    parser.add_argument(
        "--float32-max-gb",
        type=float,
        default=4.0,
        help="build exact and IVF-Flat (every vector in float32) only up to this size",
    )
    parser.add_argument(
        "--batch", type=int, default=DEFAULT_BATCH, help="vectors generated and read at a time"
    )
    parser.add_argument(
        "--retrain-swap",
        action="store_true",
        help="where IVF-Flat is skipped, build the compressed index a second time while the "
        "first answers queries, and report the worst of those (doubles the build time)",
    )
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument(
        "--store", choices=("faiss", "milvus"), default="faiss", help="milvus: measure it too"
    )
    parser.add_argument(
        "--milvus-uri",
        default=None,
        help="a Milvus server (http://host:19530); default a milvus-lite file in a temp folder",
    )
    parser.add_argument(
        "--milvus-index", default="HNSW,FLAT", help="comma-separated Milvus index types"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    milvus_uri: str | None = None
    folder = None
    if args.store == "milvus":
        folder = tempfile.TemporaryDirectory(prefix="vizdex-bench-milvus-")
        milvus_uri = args.milvus_uri or os.path.join(folder.name, "bench.db")
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
        args.rerank,
        args.swap_interval_ms / 1000,
        milvus_uri,
        [t.strip().upper() for t in args.milvus_index.split(",") if t.strip()],
        args.float32_max_gb,
        args.batch,
        args.retrain_swap,
    )
    if folder is not None:
        folder.cleanup()
    print()
    print_table(results)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump([asdict(r) for r in results], handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
