"""A back-fill's batches on a Ray cluster (``--ray auto|ray://host:10001``), for collections
too large for one machine's device.

Per page of the work list (images lacking the model's vector, read from the catalog by the
driver): Ray Data decodes the files on CPU workers (tasks: the image door, at the model's draft
scale), then ``map_batches`` with an actor class runs the encoder in an actor pool
(``ActorPoolStrategy``; ``num_gpus`` per actor where the cluster has GPUs). The driver writes the
vectors back through the catalog, one transaction per batch, like the local back-fill: the work
list is still the catalog, so a killed driver resumes without duplicates, and a file that cannot
be read fails alone. Workers need this vizdex installed and the model reachable at the same name
(hub id or a path on a shared filesystem); stored originals at the data directory's path.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from functools import partial
from typing import Any

import numpy as np

from vizdex.core.errors import UnavailableError, VizdexError
from vizdex.encoders.settings import EncoderSettings
from vizdex.imaging import ImageInputSettings

ACTOR_POOL = 1  # encoder actors per back-fill (each holds one copy of the model)


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def connect(address: str) -> None:
    """Joins the Ray cluster at ``address`` (``auto``: the one this machine belongs to, or the
    one this process already started); UnavailableError when Ray is missing or unreachable."""
    if not ray_available():
        raise UnavailableError(
            "back-filling on Ray needs the `ray[data]` package (pip install 'vizdex[ray]')",
            code="ray_unavailable",
        )
    import ray

    if ray.is_initialized():
        return
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    except Exception as error:  # ConnectionError, RuntimeError: no cluster there
        raise UnavailableError(
            f"cannot join the Ray cluster at {address!r}: {error}", code="ray_unavailable"
        ) from error


def _decode_batch(
    batch: dict[str, np.ndarray], images: dict[str, Any], side: int | None
) -> dict[str, Any]:
    """Ray Data task: files to RGB pixel arrays (empty where the image door refused one)."""
    from vizdex.imaging import ImageInputSettings, decode_image_bytes

    settings = ImageInputSettings(**images)
    pixels: list[np.ndarray] = []
    codes: list[str] = []
    messages: list[str] = []
    for path in batch["path"]:
        try:
            with open(str(path), "rb") as handle:
                data = handle.read()
            image = decode_image_bytes(data, settings, min_side=side).image
            pixels.append(np.asarray(image, dtype=np.uint8))
            codes.append("")
            messages.append("")
        except OSError as error:
            pixels.append(np.zeros((0, 0, 3), np.uint8))
            codes.append("file_missing")
            messages.append(f"cannot read {path}: {error}")
        except VizdexError as error:
            pixels.append(np.zeros((0, 0, 3), np.uint8))
            codes.append(error.code)
            messages.append(error.message)
    out = np.empty(len(pixels), dtype=object)
    out[:] = pixels
    return {"id": batch["id"], "pixels": out, "code": codes, "message": messages}


class EncodeActor:
    """Holds one encoder; embeds decoded pixels (the model's own preprocessing included)."""

    def __init__(self, model: str, settings: dict[str, Any]) -> None:
        from vizdex.encoders.loading import load_encoder

        self._encoder = load_encoder(model, EncoderSettings(**settings))

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from PIL import Image

        good = [i for i, code in enumerate(batch["code"]) if not code]
        vectors = np.zeros((len(batch["id"]), self._encoder.dim), dtype=np.float32)
        if good:
            images = [Image.fromarray(batch["pixels"][i]) for i in good]
            vectors[good] = self._encoder.encode_images(images)
        return {
            "id": batch["id"],
            "vector": vectors,
            "code": batch["code"],
            "message": batch["message"],
        }


def embed_on_ray(
    rows: Sequence[tuple[int, str]],
    model: str,
    encoder_settings: EncoderSettings,
    images: ImageInputSettings,
    *,
    batch_size: int,
    draft: int | None,
    gpus: float = 0.0,
) -> Iterator[tuple[np.ndarray, np.ndarray, list[tuple[int, str, str]]]]:
    """(ids, vectors, failures as (id, code, message)) per batch for ``rows`` of (image id,
    file path), decoded by Ray tasks and encoded by an actor pool."""
    import ray.data
    from ray.data import ActorPoolStrategy

    dataset = ray.data.from_items([{"id": image_id, "path": path} for image_id, path in rows])
    decoded = dataset.map_batches(
        partial(_decode_batch, images=asdict(images), side=draft),
        batch_size=batch_size,
        batch_format="numpy",
    )
    settings = {**asdict(encoder_settings), "models": (model,)}
    encoded = decoded.map_batches(
        EncodeActor,
        batch_size=batch_size,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=ACTOR_POOL),
        fn_constructor_kwargs={"model": model, "settings": settings},
        num_gpus=gpus,
    )
    for batch in encoded.iter_batches(batch_size=batch_size, batch_format="numpy"):
        ids = np.asarray(batch["id"], dtype=np.int64)
        failed = [
            (int(image_id), str(code), str(message))
            for image_id, code, message in zip(ids, batch["code"], batch["message"], strict=True)
            if code
        ]
        keep = np.asarray([not code for code in batch["code"]], dtype=bool)
        yield ids[keep], np.asarray(batch["vector"], dtype=np.float32)[keep], failed
