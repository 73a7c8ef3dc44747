"""Query latency while a model back-fill runs, at several ``VIZDEX_BACKFILL_SHARE`` values.

A collection of ``--images`` photos (640x480 JPEGs) is ingested with one ViT-B/32-sized CLIP
(random weights: the real model's cost); a second one is then added and back-filled in the
background, in the same process, while ``--queries`` text searches run one after another on the
first model. Each share is its own back-fill (the model is removed again after it), stopped once
the queries are done. Per round: the query p50 with no back-fill, then at each share with its
ratio to that round's p50 alone, and how many images the back-fill embedded meanwhile (what the
share trades away); at the end the median ratio per share over the rounds. On a shared machine
read the ratios, not the milliseconds.

    nice -n 10 python -m benchmarks.backfill_share --images 96 --queries 30 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import photo_set, ratio_summary
from vizdex.encoders.base import Encoder
from vizdex.encoders.loading import load_encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.imaging import ImageInputSettings
from vizdex.indexer import Indexer, IndexerSettings, IngestRequest, ModelChanges
from vizdex.search import SearchService, SearchSettings

QUERY = "a photo of a dog on the beach"


def _latencies(search: SearchService, queries: int) -> list[float]:
    """Seconds per text search, ``queries`` of them back to back."""
    spent = []
    for _ in range(queries):
        started = time.perf_counter()
        search.search_text("c", QUERY)
        spent.append(time.perf_counter() - started)
    return spent


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000


def _during_backfill(
    data: Path,
    search: SearchService,
    encoders: dict[str, Encoder],
    model: str,
    share: float,
    args: argparse.Namespace,
) -> tuple[float, int, float]:
    """(query p50 ms, images back-filled meanwhile, seconds of queries) with ``model``
    back-filling at ``share``; the model is removed again afterwards."""
    options = IndexerSettings(data_dir=data, batch_size=args.batch, backfill_share=share)
    runner = Indexer(search.catalog, search.indexes, encoders, options)
    changes = ModelChanges(search, runner)
    try:
        _, job = changes.add_model("c", model)
        time.sleep(1.0)  # its first batch under way
        started = time.perf_counter()
        during = _latencies(search, args.queries)
        window = time.perf_counter() - started
        filled = search.catalog.model_coverage(search.get_collection("c").id).get(model, 0)
        runner.cancel(job.id)
    finally:
        runner.close()
    changes.remove_model("c", model)
    return _p(during, 50), filled, window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--shares", default="0.25,0.5,1.0")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="each condition once per round")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a machine other work shares, a query alone "
        "with more threads waits on its pool's sleeping threads at every op, slower than beside "
        "a back-fill that keeps them awake, which hides what the share does)",
    )
    args = parser.parse_args()

    import torch

    from tests.support.tiny_models import make_vit_b32_clip

    torch.set_num_threads(args.threads)

    files = photo_set(640, 480, args.images)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        names = [str(make_vit_b32_clip(scratch / name, seed=i)) for i, name in enumerate("ab")]
        settings = EncoderSettings(
            models=tuple(names), device="cpu", dtype="float32", batch_size=args.batch
        )
        encoders = {name: load_encoder(name, settings) for name in names}
        serving, added = names
        search = SearchService.open(SearchSettings.for_data_dir(scratch / "data"), encoders)
        base = IndexerSettings(data_dir=scratch / "data", batch_size=args.batch)
        indexer = Indexer(search.catalog, search.indexes, encoders, base, ImageInputSettings())
        search.create_collection("c", [serving])
        indexer.ingest("c", IngestRequest(paths=tuple(str(f) for f in files)))
        indexer.close()
        print(
            f"cores={os.cpu_count()} torch threads={torch.get_num_threads()} images={args.images} "
            f"queries={args.queries} batch={args.batch} models=2x ViT-B/32 CLIP (random), CPU",
            flush=True,
        )
        _latencies(search, 5)  # warm-up
        shares = [float(value) for value in args.shares.split(",")]
        ratios: dict[float, list[float]] = {share: [] for share in shares}
        for round_ in range(1, args.rounds + 1):
            alone = _latencies(search, args.queries)
            p50_alone = _p(alone, 50)
            print(f"round {round_}: no back-fill p50 {p50_alone:7.1f} ms", flush=True)
            for share in shares:
                p50, filled, window = _during_backfill(
                    scratch / "data", search, encoders, added, share, args
                )
                ratios[share].append(p50 / p50_alone)
                print(
                    f"round {round_}: share {share:<4g} p50 {p50:7.1f} ms, ratio "
                    f"x{p50 / p50_alone:.2f}; the back-fill embedded {filled} images in the "
                    f"{window:.1f} s of queries",
                    flush=True,
                )
        for share in shares:
            print(ratio_summary(f"share {share:g}", ratios[share]))
        search.close()


if __name__ == "__main__":
    main()
