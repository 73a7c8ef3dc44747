"""Near-duplicate grouping over a whole collection: exact (flat) vs IVF index, and what IVF misses.

The vectors go into a real SQLite catalog, and the service's own ``DuplicateFinder`` groups them
(catalog reads, FAISS range search, union-find, representatives): the time is the whole scan a
``POST .../duplicates`` or ``vizdex duplicates`` runs, without building the index, which the
service keeps anyway. Data: unit vectors clustered in two levels as photo embeddings are
(``benchmarks.search``: topics > events), of which ``--copy-share`` get one to four near-copies at
cosine 0.91-0.995 (re-saves, crops, edits); everything else in a cluster sits near cosine 0.67.
IVF is timed at its tuned ``nprobe`` (recall@10 0.95, as searches use it) and at the other
``--nprobes``; "missed" counts the exact scan's pairs an IVF scan did not find.

    python -m benchmarks.duplicates --size 100000 --dim 384
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from benchmarks.search import _normalise, clustered
from vizdex.search import (
    Catalog,
    DuplicateFinder,
    DuplicateOptions,
    IndexStore,
    NewImage,
    SearchService,
    SearchSettings,
)

MODEL = "bench"
INSERT_BATCH = 5000


@dataclass
class Measurement:
    index: str
    nlist: int
    nprobe: int
    build_s: float  # building (and for IVF training and tuning) the index, once
    scan_s: float  # the whole grouping: what a request or the CLI waits for
    scan_cpu_s: float  # CPU seconds of all its threads (the wall time on a shared machine lies)
    pairs: int
    missed_pairs: int  # of the exact scan's pairs
    groups: int
    groups_as_exact: float  # share of the exact scan's groups found with the same members


def make_vectors(size: int, dim: int, copy_share: float, seed: int) -> tuple[np.ndarray, int]:
    """``size`` vectors: pictures in topics and clusters, some with near-copies (shuffled)."""
    rng = np.random.default_rng(seed)
    copies_per = rng.integers(1, 5, size=size)  # for pictures that have copies
    has_copies = rng.random(size) < copy_share
    # Enough pictures that pictures plus their copies make ``size`` vectors.
    counts = 1 + np.where(has_copies, copies_per, 0)
    pictures = int(np.searchsorted(np.cumsum(counts), size)) + 1
    topics = _normalise(rng.standard_normal((max(1, size // 1000), dim), dtype=np.float32))
    centres = clustered(rng, max(10, size // 10), topics, noise=1.0)
    originals = clustered(rng, pictures, centres, noise=0.7)
    rows = [originals]
    owners = np.repeat(np.arange(pictures), counts[:pictures] - 1)
    spread = rng.uniform(0.1, 0.45, size=len(owners)).astype(np.float32)[:, None]
    noise = rng.standard_normal((len(owners), dim), dtype=np.float32) / np.float32(np.sqrt(dim))
    rows.append(_normalise(originals[owners] + spread * noise))
    vectors = np.concatenate(rows)[:size]
    return vectors[rng.permutation(len(vectors))], int(np.sum(counts[:pictures] > 1))


def fill_catalog(catalog: Catalog, vectors: np.ndarray) -> None:
    catalog.create_collection("bench", [MODEL])
    record = catalog.get_collection("bench")
    for start in range(0, len(vectors), INSERT_BATCH):
        items = [
            NewImage(
                sha256=hashlib.sha256(str(start + offset).encode()).hexdigest(),
                width=640,
                height=480,
                format="JPEG",
                byte_size=100_000,
                vectors={MODEL: row},
            )
            for offset, row in enumerate(vectors[start : start + INSERT_BATCH])
        ]
        catalog.add_images(record.id, items)


def service_for(catalog: Catalog, settings: SearchSettings, exact_max: int) -> SearchService:
    """A service over the shared catalog with its own index store: exact, or IVF throughout."""
    index = replace(
        settings.index,
        directory=settings.index.directory / f"max-{exact_max}",
        exact_max=exact_max,
        device="cpu",
    )
    return SearchService(catalog, IndexStore(catalog, index), {})


def pair_keys(finder: DuplicateFinder, options: DuplicateOptions) -> np.ndarray:
    found = finder.pairs("bench", options)
    return found.low * (1 << 32) + found.high  # ids are below 2**32 here


def measure(
    label: str,
    service: SearchService,
    options: DuplicateOptions,
    build_s: float,
    exact: tuple[np.ndarray, set[frozenset[int]]] | None,
) -> tuple[Measurement, np.ndarray, set[frozenset[int]]]:
    finder = service.duplicates
    started, cpu = time.perf_counter(), time.process_time()
    scan = finder.scan("bench", options)
    scan_s, scan_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    keys = pair_keys(finder, options)
    groups = {frozenset(group.image_ids) for group in scan.groups}
    missed = 0 if exact is None else int(np.setdiff1d(exact[0], keys).size)
    same = 1.0 if exact is None else len(groups & exact[1]) / max(1, len(exact[1]))
    info = service.indexes.info(service.get_collection("bench"), MODEL)
    result = Measurement(
        index=label,
        nlist=info.nlist,
        nprobe=scan.nprobe,
        build_s=round(build_s, 2),
        scan_s=round(scan_s, 2),
        scan_cpu_s=round(scan_cpu_s, 2),
        pairs=scan.pairs,
        missed_pairs=missed,
        groups=len(scan.groups),
        groups_as_exact=round(same, 4),
    )
    return result, keys, groups


def run(args: argparse.Namespace) -> list[Measurement]:
    started = time.perf_counter()
    vectors, with_copies = make_vectors(args.size, args.dim, args.copy_share, args.seed)
    print(
        f"{len(vectors):,} vectors ({with_copies:,} pictures with near-copies) made in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="vizdex-dups-") as folder:
        settings = SearchSettings.for_data_dir(Path(folder))
        catalog = Catalog.open(settings.catalog)
        started = time.perf_counter()
        fill_catalog(catalog, vectors)
        del vectors
        print(f"catalog filled in {time.perf_counter() - started:.1f} s", flush=True)
        options = DuplicateOptions(threshold=args.threshold)

        exact = service_for(catalog, settings, exact_max=args.size)
        started = time.perf_counter()
        exact.warm_up()  # loads (builds) the index
        exact_result, exact_keys, exact_groups = measure(
            "flat", exact, options, time.perf_counter() - started, None
        )
        print(json.dumps(asdict(exact_result)), flush=True)
        results.append(exact_result)

        ivf = service_for(catalog, settings, exact_max=0)
        started = time.perf_counter()
        ivf.warm_up()
        ivf.indexes.wait_idle()
        build_s = time.perf_counter() - started
        for nprobe in [None, *args.nprobes]:
            result, _, _ = measure(
                "ivf",
                ivf,
                replace(options, nprobe=nprobe),
                build_s,
                (exact_keys, exact_groups),
            )
            print(json.dumps(asdict(result)), flush=True)
            results.append(result)
        exact.indexes.close(snapshot=False)
        ivf.indexes.close(snapshot=False)
        catalog.close()
    return results


def print_table(results: Sequence[Measurement]) -> None:
    header = (
        f"{'index':>5} {'nlist':>6} {'nprobe':>6} {'build s':>8} {'scan s':>7} {'cpu s':>7} "
        f"{'pairs':>8} "
        f"{'missed':>7} {'groups':>7} {'same groups':>11}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.index:>5} {r.nlist:>6} {r.nprobe:>6} {r.build_s:>8.1f} {r.scan_s:>7.1f} "
            f"{r.scan_cpu_s:>7.1f} {r.pairs:>8,} {r.missed_pairs:>7,} {r.groups:>7,} "
            f"{r.groups_as_exact:>11.4f}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=100_000, help="vectors in the collection")
    parser.add_argument("--dim", type=int, default=384, help="384: DINOv3 ViT-S/16")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--copy-share", type=float, default=0.2, help="pictures with copies")
    parser.add_argument(
        "--nprobes", default="1,4,16", help="IVF nprobe values timed besides the tuned one"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    args.nprobes = [int(n) for n in args.nprobes.split(",") if n.strip()]
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, {args.size:,} vectors, "
        f"dim {args.dim}, threshold {args.threshold}",
        flush=True,
    )
    results = run(args)
    print()
    print_table(results)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump([asdict(r) for r in results], handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
