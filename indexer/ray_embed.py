"""Embedding on a Ray cluster (``--ray auto|ray://host:10001``), for a model back-fill or a first
ingest too large for one machine's device.

The driver keeps the work list and the writes: per page of files (image id or work-list key,
path), Ray Data decodes them on CPU workers (tasks: the image door, at the models' draft scale;
for an ingest also the sha256, the file's stat and the thumbnail, as the local loader makes them),
then ``map_batches`` with an actor class runs the encoders in an actor pool
(``ActorPoolStrategy``; ``num_gpus`` per actor where the cluster has GPUs). The driver writes the
vectors back through the catalog, one transaction per batch, like the local pipelines: the work
list is still the catalog, so a killed driver resumes without duplicates, and a file that cannot
be read fails alone. Workers need this vizdex installed and the models reachable at the same
names (hub ids or paths on a shared filesystem); files at the same paths.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np

from vizdex.core.errors import UnavailableError, VizdexError
from vizdex.encoders.settings import EncoderSettings
from vizdex.imaging import ImageInputSettings

ACTOR_POOL = 1  # encoder actors per run (each holds one copy of the models)
# What a decode task gives per file: pixels, or the image door's refusal; an ingest's facts.
COLUMNS: tuple[str, ...] = ("pixels", "code", "message", "sha256", "width", "height", "format")
COLUMNS += ("byte_size", "size", "mtime_ns", "thumbnail")


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def connect(address: str) -> None:
    """Joins the Ray cluster at ``address`` (``auto``: the one this machine belongs to, or the
    one this process already started); UnavailableError when Ray is missing or unreachable."""
    if not ray_available():
        raise UnavailableError(
            "running on Ray needs the `ray[data]` package (pip install 'vizdex[ray]')",
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


@dataclass(frozen=True)
class Thumbnails:
    """An ingest's thumbnails, made on the cluster from the decoded pixels."""

    longest: int
    quality: int


@dataclass(frozen=True)
class RayWork:
    """What the cluster runs: ``models`` (name, its encoder settings) in one actor, decoding at
    ``draft`` (None: full size); with ``thumbnails`` the decode tasks also describe each file
    (an ingest's ``FileFacts``)."""

    models: tuple[tuple[str, EncoderSettings], ...]
    images: ImageInputSettings
    batch_size: int
    draft: int | None
    gpus: float = 0.0
    thumbnails: Thumbnails | None = None


@dataclass(frozen=True)
class FileFacts:
    """What an ingest records of a file besides its vectors (the local loader's ``Fresh``)."""

    sha256: str
    width: int
    height: int
    format: str
    byte_size: int
    size: int
    mtime_ns: int
    thumbnail: bytes


@dataclass
class RayBatch:
    """One encoded batch: the keys that made it, their vectors by model, their facts (ingest
    only), and (key, code, message) for each file that failed."""

    keys: np.ndarray
    vectors: dict[str, np.ndarray]
    facts: list[FileFacts] = field(default_factory=list)
    failures: list[tuple[int, str, str]] = field(default_factory=list)


def _read(path: str, images: ImageInputSettings, describe: bool) -> tuple[bytes, int, int]:
    """An ingest reads as the local loader does (size cap, stat of the bytes read); a back-fill
    reads the file it recorded."""
    if describe:
        from vizdex.indexer.loading import read_file

        return read_file(path, images)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise VizdexError(f"cannot read {path}: {error}", code="file_missing") from None
    return data, len(data), 0


def _decode_batch(
    batch: dict[str, np.ndarray], images: dict[str, Any], side: int | None, thumbs: Any
) -> dict[str, Any]:
    """Ray Data task: files to RGB pixel arrays (empty where the image door refused one)."""

    from vizdex.imaging import ImageInputSettings, decode_image_bytes

    settings = ImageInputSettings(**images)
    describe = thumbs is not None
    columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    for path in batch["path"]:
        row: dict[str, Any] = {"pixels": np.zeros((0, 0, 3), np.uint8), "code": "", "message": ""}
        row.update(sha256="", width=0, height=0, format="", byte_size=0, size=0, mtime_ns=0)
        row["thumbnail"] = b""
        try:
            data, size, mtime_ns = _read(str(path), settings, describe)
            decoded = decode_image_bytes(data, settings, min_side=side)
            row["pixels"] = np.asarray(decoded.image, dtype=np.uint8)
            if describe:
                from vizdex.indexer.thumbnails import make_thumbnail

                row.update(
                    sha256=decoded.sha256,  # of ``data``: hashed once, by the decode
                    width=decoded.width,
                    height=decoded.height,
                    format=decoded.format,
                    byte_size=len(data),
                    size=size,
                    mtime_ns=mtime_ns,
                    thumbnail=make_thumbnail(
                        decoded.image, longest=thumbs["longest"], quality=thumbs["quality"]
                    ),
                )
        except VizdexError as error:
            row["code"], row["message"] = error.code, error.message
        for name, value in row.items():
            columns[name].append(value)
    out: dict[str, Any] = {"key": batch["key"]}
    for name, values in columns.items():
        if name in ("pixels", "thumbnail"):
            array = np.empty(len(values), dtype=object)
            array[:] = values
            out[name] = array
        else:
            out[name] = values
    return out


class EncodeActor:
    """Holds the encoders; embeds decoded pixels (each model's own preprocessing included)."""

    def __init__(self, models: list[tuple[str, dict[str, Any]]]) -> None:
        from vizdex.encoders.loading import load_encoder

        self._encoders = [
            load_encoder(model, EncoderSettings(**settings)) for model, settings in models
        ]

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from PIL import Image

        good = [i for i, code in enumerate(batch["code"]) if not code]
        images = [Image.fromarray(batch["pixels"][i]) for i in good]
        out = {name: values for name, values in batch.items() if name != "pixels"}
        for index, encoder in enumerate(self._encoders):
            vectors = np.zeros((len(batch["key"]), encoder.dim), dtype=np.float32)
            if good:
                vectors[good] = encoder.encode_images(images)
            out[f"vector_{index}"] = vectors
        return out


def _settings_dict(settings: EncoderSettings, model: str) -> dict[str, Any]:
    return {**asdict(settings), "models": (model,)}


def embed_on_ray(rows: Sequence[tuple[int, str]], work: RayWork) -> Iterator[RayBatch]:
    """A ``RayBatch`` per batch for ``rows`` of (key, file path), decoded by Ray tasks and
    encoded by an actor pool; batches come in the order the cluster finishes them."""
    import ray.data
    from ray.data import ActorPoolStrategy

    dataset = ray.data.from_items([{"key": key, "path": path} for key, path in rows])
    thumbs = None if work.thumbnails is None else asdict(work.thumbnails)
    decoded = dataset.map_batches(
        partial(_decode_batch, images=asdict(work.images), side=work.draft, thumbs=thumbs),
        batch_size=work.batch_size,
        batch_format="numpy",
    )
    models = [(model, _settings_dict(settings, model)) for model, settings in work.models]
    encoded = decoded.map_batches(
        EncodeActor,
        batch_size=work.batch_size,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=ACTOR_POOL),
        fn_constructor_kwargs={"models": models},
        num_gpus=work.gpus,
    )
    for batch in encoded.iter_batches(batch_size=work.batch_size, batch_format="numpy"):
        yield _unpack(batch, work)


def _unpack(batch: dict[str, Any], work: RayWork) -> RayBatch:
    keys = np.asarray(batch["key"], dtype=np.int64)
    codes = [str(code) for code in batch["code"]]
    keep = np.asarray([not code for code in codes], dtype=bool)
    failures = [
        (int(key), code, str(message))
        for key, code, message in zip(keys, codes, batch["message"], strict=True)
        if code
    ]
    vectors = {
        model: np.asarray(batch[f"vector_{index}"], dtype=np.float32)[keep]
        for index, (model, _) in enumerate(work.models)
    }
    facts = []
    if work.thumbnails is not None:
        facts = [
            FileFacts(
                sha256=str(batch["sha256"][i]),
                width=int(batch["width"][i]),
                height=int(batch["height"][i]),
                format=str(batch["format"][i]),
                byte_size=int(batch["byte_size"][i]),
                size=int(batch["size"][i]),
                mtime_ns=int(batch["mtime_ns"][i]),
                thumbnail=bytes(batch["thumbnail"][i]),
            )
            for i in np.flatnonzero(keep)
        ]
    return RayBatch(keys=keys[keep], vectors=vectors, facts=facts, failures=failures)
