"""Images/s of vizdex's image path vs the naive transformers pipeline, same JPEGs, same model.

Naive: PIL open -> CLIP processor -> model, batches of 64, one process (what most scripts do).
Ours: draft JPEG decode + our preprocessing in threads, overlapped with the model forward.
Model: ViT-B/32-shaped CLIP with random weights, loaded through vizdex's own loader.

    python -m benchmarks.encode                 # CPU: 12 MP and 640x480 photos
    python -m benchmarks.encode --device cuda   # adds the nvJPEG on-device decode path
    python -m benchmarks.encode --dtype float32,bfloat16,int8   # our side in each precision

The naive side always runs the stock model in float32 on the CPU (float16 on CUDA): the baseline.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from benchmarks.common import add_dtype_option, photo_set, rate, ratio_summary
from tests.support.tiny_models import make_vit_b32_clip
from vizdex.encoders.base import Encoder
from vizdex.encoders.device_jpeg import decode_jpegs
from vizdex.encoders.hf_encoder import HFEncoder
from vizdex.encoders.loading import load_encoder
from vizdex.encoders.preprocess import preprocess_tensor
from vizdex.encoders.settings import EncoderSettings
from vizdex.encoders.streaming import encode_stream
from vizdex.imaging import DecodedImage, decode_file
from vizdex.imaging.settings import ImageInputSettings

DOOR = ImageInputSettings()


class Naive:
    """The pipeline most scripts write: PIL open -> processor -> model, one process."""

    def __init__(self, model_dir: Path, device: torch.device) -> None:
        from transformers import CLIPImageProcessor, CLIPModel

        self.device = device
        self.dtype = torch.float16 if device.type == "cuda" else torch.float32
        self.processor = CLIPImageProcessor.from_pretrained(model_dir)
        model: Any = CLIPModel.from_pretrained(model_dir, dtype=self.dtype)
        self.model = model.to(device).eval()

    def runner(self, files: list[Path], batch: int) -> Callable[[], None]:
        def run() -> None:
            for start in range(0, len(files), batch):
                images = [Image.open(p).convert("RGB") for p in files[start : start + batch]]
                pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
                with torch.inference_mode():
                    self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype))
            if self.device.type == "cuda":
                torch.cuda.synchronize()

        return run


def ours(files: list[Path], encoder: Encoder, batch: int, workers: int) -> Callable[[], None]:
    def load(path: Path, min_side: int | None) -> tuple[Image.Image, DecodedImage]:
        decoded = decode_file(path, DOOR, min_side=min_side)
        return decoded.image, decoded

    def run() -> None:
        for _ in encode_stream(files, [encoder], load, batch_size=batch, workers=workers):
            pass

    return run


def ours_device_decode(files: list[Path], encoder: HFEncoder, batch: int) -> Callable[[], None]:
    """nvJPEG decode + preprocessing on the GPU; the CPU only reads bytes."""
    from concurrent.futures import ThreadPoolExecutor

    spec = encoder.preprocess_spec
    assert spec is not None

    def run() -> None:
        with ThreadPoolExecutor(8) as pool:
            for start in range(0, len(files), batch):
                datas = list(pool.map(Path.read_bytes, files[start : start + batch]))
                tensors = decode_jpegs(datas, encoder.device)
                pixels = torch.stack([preprocess_tensor(t, spec) for t in tensors if t is not None])
                encoder.encode_pixels(pixels)

    return run


def model_only(encoder: Encoder, count: int, batch: int) -> Callable[[], None]:
    # On the model's device, like the stock side's: on an H100 a host copy of float32 pixels
    # inside the timing made ours look slower (2,964 vs 6,743 img/s): it compared copies.
    pixels = torch.randn(batch, 3, 224, 224, device=encoder.device)

    def run() -> None:
        for _ in range(0, count, batch):
            encoder.encode_pixels(pixels)

    return run


def stock_model_only(reference: Naive, count: int, batch: int) -> Callable[[], None]:
    """The untouched transformers model on the same tensors: what our fused layers gain."""
    pixels = torch.randn(batch, 3, 224, 224, device=reference.device, dtype=reference.dtype)

    def run() -> None:
        with torch.inference_mode():
            for _ in range(0, count, batch):
                reference.model.get_image_features(pixel_values=pixels)
        if reference.device.type == "cuda":
            torch.cuda.synchronize()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--large", type=int, default=64, help="number of 12 MP photos")
    parser.add_argument("--small", type=int, default=256, help="number of 640x480 photos")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="decode threads (0 = cores)")
    parser.add_argument("--repeat", type=int, default=1, help="alternate naive/ours N times")
    add_dtype_option(parser)
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_vit_b32_clip(Path(tmp) / "clip-vit-b32")
        encoders: dict[str, Encoder] = {}
        for dtype in args.dtype:
            settings = EncoderSettings(
                models=(str(model_dir),), device=args.device, dtype=dtype, batch_size=args.batch
            )
            encoders[dtype] = load_encoder(str(model_dir), settings)
            encoders[dtype].warmup()
        print(
            f"device={device} threads={torch.get_num_threads()} model=ViT-B/32 CLIP (random) "
            f"ours: {', '.join(f'{d}={e.precision}' for d, e in encoders.items())}"
        )
        sets = {
            "12MP 4000x3000": photo_set(4000, 3000, args.large),
            "640x480": photo_set(640, 480, args.small),
        }
        reference = Naive(model_dir, device)
        reference.runner(sets["640x480"][:8], args.batch)()  # warm-up
        count = args.batch * 2
        stock = rate(count, stock_model_only(reference, count, args.batch))
        line = f"model alone (preprocessed tensors): transformers {stock:8.1f} img/s"
        for encoder in encoders.values():
            ceiling = rate(count, model_only(encoder, count, args.batch))
            line += f" | ours {encoder.precision} {ceiling:8.1f} img/s x{ceiling / stock:5.2f}"
        print(line, flush=True)
        for label, files in sets.items():
            ratios: dict[str, list[float]] = {dtype: [] for dtype in encoders}
            for _ in range(args.repeat):
                baseline = rate(len(files), reference.runner(files, args.batch))
                line = f"{label:>15}: naive {baseline:8.1f} img/s"
                for dtype, encoder in encoders.items():
                    ours_rate = rate(len(files), ours(files, encoder, args.batch, args.workers))
                    ratios[dtype].append(ours_rate / baseline)
                    line += (
                        f" | ours {encoder.precision} {ours_rate:8.1f} img/s "
                        f"x{ours_rate / baseline:5.2f}"
                    )
                    if device.type == "cuda":
                        assert isinstance(encoder, HFEncoder)
                        gpu_rate = rate(len(files), ours_device_decode(files, encoder, args.batch))
                        line += f" | nvJPEG {gpu_rate:8.1f} img/s (x{gpu_rate / baseline:5.2f})"
                print(line, flush=True)
            if args.repeat > 1:
                for dtype, values in ratios.items():
                    print(ratio_summary(f"{label} {dtype}", values), flush=True)


if __name__ == "__main__":
    main()
