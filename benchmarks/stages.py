"""Where ingest time goes: each stage of the pipeline alone, at full parallelism, in images/s.

The end-to-end rate can be no higher than the slowest stage that has to run for every image, so
this table says which one to work on (and which ceiling a benchmark is up against). CPU stages run
on a pool of one thread per core, as the pipeline's decode stage does; device stages run in the
calling thread, as the pipeline's forward does.

    python -m benchmarks.stages                          # CPU, 12 MP and 640x480
    python -m benchmarks.stages --device cuda --large 256 --small 2048 --batch 256
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks.common import photo_set
from tests.support.tiny_models import make_vit_b32_clip
from vizdex.encoders.hf_encoder import HFEncoder
from vizdex.encoders.loading import load_encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.imaging import decode_image_bytes
from vizdex.imaging.settings import ImageInputSettings
from vizdex.indexer.sources import Fresh
from vizdex.indexer.storage import DataStore
from vizdex.indexer.thumbnail_sink import ThumbnailSink
from vizdex.indexer.thumbnails import make_thumbnail

DOOR = ImageInputSettings()


def _pooled(pool: ThreadPoolExecutor, work: Callable[[Any], object], items: Sequence[Any]) -> float:
    started = time.perf_counter()
    for _ in pool.map(work, items):
        pass
    return len(items) / (time.perf_counter() - started)


def _batched(work: Callable[[Sequence[Any]], object], items: Sequence[Any], batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(items), batch):
        work(items[start : start + batch])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return len(items) / (time.perf_counter() - started)


def cpu_stages(
    files: list[Path], datas: list[bytes], encoder: HFEncoder, threads: int, scratch: Path
) -> dict[str, float]:
    min_side = encoder.decode_min_side
    store = DataStore(scratch / "data")
    drafts = [decode_image_bytes(data, DOOR, min_side=min_side).image for data in datas[:8]]

    def thumbnail_decode(data: bytes) -> bytes:
        return make_thumbnail(decode_image_bytes(data, DOOR, min_side=256).image)

    def model_decode(data: bytes) -> torch.Tensor:
        return encoder.preprocess([decode_image_bytes(data, DOOR, min_side=min_side).image])

    webp = make_thumbnail(drafts[0])
    with ThreadPoolExecutor(threads) as pool:
        return {
            "read file": _pooled(pool, Path.read_bytes, files),
            "sha256": _pooled(pool, lambda d: hashlib.sha256(d).hexdigest(), datas),
            "decode (draft) + preprocess": _pooled(pool, model_decode, datas),
            "decode (thumb draft) + WebP": _pooled(pool, thumbnail_decode, datas),
            "WebP from a draft decode": _pooled(
                pool, lambda i: make_thumbnail(drafts[i % len(drafts)]), range(len(datas))
            ),
            "thumbnail write (fsync each)": _pooled(
                pool,
                lambda i: store.write_atomic(store.root / "thumbs" / f"{i}.webp", webp),
                range(len(datas)),
            ),
            "WebP + write, batched (sink)": _sink_rate(store, drafts, len(datas), threads),
        }


def _sink_rate(store: DataStore, drafts: list[Image.Image], count: int, threads: int) -> float:
    """The writer's thumbnail step: WebP from previews and batch-durable writes, 64 at a time."""
    payloads = [
        Fresh(f"{i:064x}", 1, 1, "JPEG", 1, store.thumbnail_name(f"{i:064x}")) for i in range(count)
    ]
    previews = [drafts[i % len(drafts)] for i in range(count)]
    sink = ThumbnailSink(store, longest=256, quality=80, workers=threads)
    with closing(sink):
        return _batched(
            lambda chunk: sink.write([payloads[i] for i in chunk], [previews[i] for i in chunk]),
            range(count),
            64,
        )


def device_stages(datas: list[bytes], encoder: HFEncoder, batch: int) -> dict[str, float]:
    """The stream's device work, as it runs it: nvJPEG, then batched preprocessing and previews."""
    from vizdex.encoders.device_jpeg import decode_jpegs, warm_up_decoder
    from vizdex.encoders.preprocess import preprocess_batch, previews

    spec = encoder.preprocess_spec
    assert spec is not None
    warm_up_decoder(encoder.device)  # nvJPEG set-up, not timed
    decoded = [t for t in decode_jpegs(datas[:batch], encoder.device) if t is not None]
    pixels = torch.stack(preprocess_batch(decoded, spec, draft=True))
    return {
        "device decode (nvJPEG)": _batched(
            lambda chunk: decode_jpegs(list(chunk), encoder.device), datas, batch
        ),
        "device preprocess (batched, draft)": _batched(
            lambda chunk: preprocess_batch(list(chunk), spec, draft=True), decoded * 4, batch
        ),
        "device previews (256 px, to host)": _batched(
            lambda chunk: previews(list(chunk), 256), decoded * 4, batch
        ),
        f"model forward ({encoder.dtype})": _batched(
            lambda _: encoder.encode_pixels(pixels), range(batch * 4), batch
        ),
    }


def catalog_stage(count: int, dim: int, scratch: Path, batch: int) -> float:
    from vizdex.search import Catalog, IndexStore, NewImage, SearchSettings, SourceKind

    settings = SearchSettings.for_data_dir(scratch / "catalog")
    catalog = Catalog.open(settings.catalog)
    collection = catalog.create_collection("stages", ["m"])
    indexes = IndexStore(catalog, settings.index)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [
        NewImage(
            sha256=hashlib.sha256(str(i).encode()).hexdigest(),
            width=640,
            height=480,
            format="JPEG",
            byte_size=1000,
            vectors={"m": vectors[i]},
            source_kind=SourceKind.PATH,
            source_uri=f"/photos/{i:06d}.jpg",
            thumbnail_path=f"thumbs/{i}.webp",
        )
        for i in range(count)
    ]

    def write(chunk: Sequence[NewImage]) -> None:
        catalog.add_images(collection.id, chunk)
        indexes.sync(collection)

    try:
        return _batched(write, rows, batch)
    finally:
        indexes.close()
        catalog.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--large", type=int, default=32, help="number of 12 MP photos")
    parser.add_argument("--small", type=int, default=256, help="number of 640x480 photos")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="CPU stage threads (0 = cores)")
    args = parser.parse_args()
    threads = args.threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        model_dir = make_vit_b32_clip(scratch / "clip-vit-b32")
        settings = EncoderSettings(
            models=(str(model_dir),), device=args.device, batch_size=args.batch
        )
        encoder = load_encoder(str(model_dir), settings)
        assert isinstance(encoder, HFEncoder)
        encoder.warmup()
        print(f"device={encoder.device} dtype={encoder.dtype} threads={threads} batch={args.batch}")
        sets = {
            "12MP": photo_set(4000, 3000, args.large),
            "640x480": photo_set(640, 480, args.small),
        }
        table: dict[str, dict[str, float]] = {}
        for label, files in sets.items():
            if not files:
                continue
            datas = [path.read_bytes() for path in files]
            rates = cpu_stages(files, datas, encoder, threads, scratch / label)
            if encoder.device.type == "cuda":
                rates |= device_stages(datas, encoder, args.batch)
            table[label] = rates
        count = max(len(files) for files in sets.values())
        catalog_rate = catalog_stage(max(count, args.batch), encoder.dim, scratch, args.batch)
        labels = list(table)
        print(f"\n{'stage':<34}" + "".join(f"{label:>12}" for label in labels))
        for stage in next(iter(table.values())):
            print(f"{stage:<34}" + "".join(f"{table[lab][stage]:12.1f}" for lab in labels))
        print(f"{'catalog + index write':<34}{catalog_rate:12.1f}  (any size)")


if __name__ == "__main__":
    main()
