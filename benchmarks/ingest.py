"""End-to-end ingestion: JPEG files on disk -> vectors committed in the catalog and the index.

Naive: PIL open -> CLIP processor -> model, batches of 64, one process, then a plain insert of
each batch (``Catalog.add_images`` + index update, the same write path as ours).
Ours: ``vizdex ingest`` (``indexer.Indexer``): discovery, sha256 dedupe, draft decode and
preprocessing in threads overlapped with the model, 256 px WebP thumbnails, one transaction per
batch, index update, job bookkeeping, final index snapshot.
Model: ViT-B/32-shaped CLIP with random weights (same cost as the real one).

Each phase runs in its own subprocess, so peak memory (VmHWM, reset after the model is loaded and
warmed up) belongs to that phase alone, and the two phases run on the same files in one invocation.

    python -m benchmarks.ingest                              # CPU: 32 photos of 12 MP
    python -m benchmarks.ingest --large 64 --small 256 --repeat 2
    python -m benchmarks.ingest --device cuda --large 512 --small 4096 --batch 256
    python -m benchmarks.ingest --dtype float32,bfloat16,int8    # ours in each precision

The naive side always runs the stock model in float32 on the CPU (float16 on CUDA): the baseline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import add_dtype_option, photo_set, ratio_summary

REPO = Path(__file__).parents[1]


# -- measurements inside a phase ---------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Make VmHWM start again from the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _open_catalog(data_dir: Path, model: str) -> tuple[Any, Any, Any]:
    from vizdex.search import Catalog, IndexStore, SearchSettings

    settings = SearchSettings.for_data_dir(data_dir)
    catalog = Catalog.open(settings.catalog)
    collection = catalog.create_collection("bench", [model])
    return catalog, IndexStore(catalog, settings.index), collection


def _naive(files: list[Path], model_dir: Path, device: str, batch: int, data_dir: Path) -> None:
    import numpy as np
    import torch
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPModel

    from vizdex.search import NewImage, SourceKind

    dtype = torch.float16 if device == "cuda" else torch.float32
    processor = CLIPImageProcessor.from_pretrained(model_dir)
    model: Any = CLIPModel.from_pretrained(model_dir, dtype=dtype)
    model = model.to(device).eval()
    catalog, indexes, collection = _open_catalog(data_dir, str(model_dir))
    name = str(model_dir)

    def features(images: list[Image.Image]) -> np.ndarray:
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            out = model.get_image_features(pixel_values=pixels.to(device, dtype))
        out = out.pooler_output if hasattr(out, "pooler_output") else out
        out = torch.nn.functional.normalize(out.float(), dim=-1)
        return np.asarray(out.cpu().numpy(), dtype=np.float32)

    features([Image.new("RGB", (320, 240))] * 2)  # warm-up, not timed

    def run() -> None:
        for start in range(0, len(files), batch):
            chunk = files[start : start + batch]
            images = [Image.open(path).convert("RGB") for path in chunk]
            vectors = features(images)
            rows = [
                NewImage(
                    sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                    width=image.width,
                    height=image.height,
                    format="JPEG",
                    byte_size=path.stat().st_size,
                    vectors={name: vector},
                    source_kind=SourceKind.PATH,
                    source_uri=str(path),
                )
                for path, image, vector in zip(chunk, images, vectors, strict=True)
            ]
            catalog.add_images(collection.id, rows)
            indexes.sync(collection)
        if device == "cuda":
            torch.cuda.synchronize()

    _measure(run, len(files), catalog, collection)
    indexes.close()


def _ours(
    files: list[Path],
    model_dir: Path,
    device: str,
    dtype: str,
    batch: int,
    workers: int,
    data_dir: Path,
) -> None:
    from vizdex.indexer import Indexer, IndexerSettings, IngestRequest

    encoder = _encoder(model_dir, device, dtype, batch)
    name = str(model_dir)
    catalog, indexes, collection = _open_catalog(data_dir, name)
    settings = IndexerSettings(data_dir=data_dir, batch_size=batch, workers=workers)
    indexer = Indexer(catalog, indexes, {name: encoder}, settings)
    listing = data_dir / "files.txt"
    listing.write_text("".join(f"{path}\n" for path in files))

    stages: dict[str, float] = {}

    class StageSeconds(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            stages.update(getattr(record, "stage_seconds", {}))

    pipeline_log = logging.getLogger("vizdex.indexer.pipeline")
    pipeline_log.setLevel(logging.INFO)
    pipeline_log.addHandler(StageSeconds())

    def run() -> None:
        report = indexer.ingest("bench", IngestRequest(files_from=str(listing)))
        assert report.indexed == len(files), report.summary()

    _measure(run, len(files), catalog, collection, stages)
    indexes.close()


def _encoder(model_dir: Path, device: str, dtype: str, batch: int) -> Any:
    from vizdex.encoders.loading import load_encoder
    from vizdex.encoders.settings import EncoderSettings

    name = str(model_dir)
    settings = EncoderSettings(models=(name,), device=device, dtype=dtype, batch_size=batch)
    encoder = load_encoder(name, settings)
    encoder.warmup()
    return encoder


def _model_alone(count: int, model_dir: Path, device: str, dtype: str, batch: int) -> None:
    """The model on ready-made pixel tensors: the ceiling for any pipeline on this machine."""
    import torch

    encoder = _encoder(model_dir, device, dtype, batch)
    pixels = torch.randn(batch, 3, 224, 224)
    started = time.perf_counter()
    for _ in range(max(1, count // batch)):
        encoder.encode_pixels(pixels)
    seconds = time.perf_counter() - started
    rate = max(1, count // batch) * batch / seconds
    print("RESULT " + json.dumps({"rate": rate, "peak_rss_mb": 0.0}), flush=True)


def _measure(
    run: Any, count: int, catalog: Any, collection: Any, stages: dict[str, float] | None = None
) -> None:
    reset = _reset_peak()
    base_kb = _status_kb("VmRSS")
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    assert catalog.count_images(collection.id) == count
    result = {
        "images": count,
        "seconds": seconds,
        "rate": count / seconds,
        "base_rss_mb": base_kb / 1024,
        "peak_rss_mb": _status_kb("VmHWM") / 1024,
        "peak_is_phase_only": reset,
        "stages": stages or {},
    }
    print("RESULT " + json.dumps(result), flush=True)


def _phase(args: argparse.Namespace) -> None:
    files = [Path(line) for line in Path(args.files).read_text().splitlines() if line]
    data_dir = Path(args.data_dir)
    if args.phase == "model":
        _model_alone(len(files), Path(args.model_dir), args.device, args.phase_dtype, args.batch)
    elif args.phase == "naive":
        _naive(files, Path(args.model_dir), args.device, args.batch, data_dir)
    else:
        _ours(
            files,
            Path(args.model_dir),
            args.device,
            args.phase_dtype,
            args.batch,
            args.workers,
            data_dir,
        )


# -- the driver --------------------------------------------------------------------------------


def _run_phase(
    phase: str,
    files: list[Path],
    model_dir: Path,
    args: argparse.Namespace,
    scratch: Path,
    dtype: str = "float32",
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"{phase}-", dir=scratch))
    listing = work / "input.txt"
    listing.write_text("".join(f"{path}\n" for path in files))
    command = [
        sys.executable,
        "-m",
        "benchmarks.ingest",
        "--phase",
        phase,
        "--files",
        str(listing),
        "--model-dir",
        str(model_dir),
        "--data-dir",
        str(work / "data"),
        "--device",
        args.device,
        "--batch",
        str(args.batch),
        "--workers",
        str(args.workers),
        "--phase-dtype",
        dtype,
    ]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{phase} phase failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return result


def _memory(result: dict[str, Any]) -> str:
    """Peak RSS of the phase, and how much of it the model (loaded, warmed up) already took."""
    return f"peak {result['peak_rss_mb']:,.0f} MB, model loaded {result['base_rss_mb']:,.0f} MB"


def _stages(result: dict[str, Any]) -> str:
    """The pipeline's own stage clock (main thread: waiting, device decode, model forward;
    writer thread: thumbnails, catalog write, index update), largest first."""
    ranked = sorted(result.get("stages", {}).items(), key=lambda entry: -entry[1])
    return ", ".join(f"{name} {seconds:.2f}" for name, seconds in ranked) or "-"


def _warm_page_cache(files: list[Path]) -> None:
    for path in files:
        path.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--large", type=int, default=32, help="number of 12 MP photos")
    parser.add_argument("--small", type=int, default=0, help="number of 640x480 photos")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="decode threads (0 = cores)")
    parser.add_argument("--repeat", type=int, default=1, help="alternate naive/ours N times")
    parser.add_argument("--phase", choices=["model", "naive", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--phase-dtype", default="auto", help=argparse.SUPPRESS)
    add_dtype_option(parser)
    args = parser.parse_args()
    if args.phase:
        _phase(args)
        return

    import torch

    from tests.support.tiny_models import make_vit_b32_clip

    sets = {}
    if args.large:
        sets["12MP 4000x3000"] = photo_set(4000, 3000, args.large)
    if args.small:
        sets["640x480"] = photo_set(640, 480, args.small)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        model_dir = make_vit_b32_clip(scratch / "clip-vit-b32")
        print(
            f"device={args.device} cores={os.cpu_count()} torch threads={torch.get_num_threads()} "
            f"batch={args.batch} model=ViT-B/32 CLIP (random weights)",
            flush=True,
        )
        for label, files in sets.items():
            _warm_page_cache(files)
            for dtype in args.dtype:
                ceiling = _run_phase("model", files, model_dir, args, scratch, dtype)
                print(
                    f"{label:>15}: model alone on ready pixels, {dtype} "
                    f"{ceiling['rate']:7.1f} img/s",
                    flush=True,
                )
            ratios: dict[str, list[float]] = {dtype: [] for dtype in args.dtype}
            for _ in range(args.repeat):
                naive = _run_phase("naive", files, model_dir, args, scratch)
                print(
                    f"{label:>15} x{len(files)}: naive {naive['rate']:7.1f} img/s "
                    f"({_memory(naive)})",
                    flush=True,
                )
                for dtype in args.dtype:
                    ours = _run_phase("ours", files, model_dir, args, scratch, dtype)
                    ratios[dtype].append(ours["rate"] / naive["rate"])
                    print(
                        f"{'':>15}  ours {dtype:>8} {ours['rate']:7.1f} img/s ({_memory(ours)}) "
                        f"| x{ours['rate'] / naive['rate']:.2f}",
                        flush=True,
                    )
                    print(f"{'':>15}  ours, seconds per stage: {_stages(ours)}", flush=True)
            if args.repeat > 1:
                for dtype, values in ratios.items():
                    print(ratio_summary(f"{label} {dtype}", values), flush=True)


if __name__ == "__main__":
    main()
