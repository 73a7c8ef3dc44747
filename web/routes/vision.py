"""The seed's vision endpoints: list models, encode images."""

from __future__ import annotations

import time

import msgspec
from litestar import get, post

from encoders.images import load_image
from web.state import ServiceState


class ModelInfo(msgspec.Struct):
    name: str
    kind: str
    dimensions: int
    device: str
    dtype: str


class ModelList(msgspec.Struct):
    models: list[ModelInfo]


class ImageInput(msgspec.Struct, forbid_unknown_fields=True):
    """One image: exactly one of base64 ``data`` (or a data: URL), ``url`` or ``path``."""

    data: str | None = None
    url: str | None = None
    path: str | None = None


class VisionEncodeRequest(msgspec.Struct, forbid_unknown_fields=True):
    images: list[str | ImageInput]
    model: str | None = None
    normalize: bool = True
    return_tensors: bool = False


class VisionEncodeResponse(msgspec.Struct):
    model: str
    embeddings: list[list[float]]
    dimensions: int
    processing_time: float


@get("/v1/models", sync_to_thread=False)
def list_models(vizdex: ServiceState) -> ModelList:
    return ModelList(
        models=[msgspec.convert(e.describe(), ModelInfo) for e in vizdex.encoders.values()]
    )


@post("/v1/vision/encode", sync_to_thread=True)
def vision_encode(data: VisionEncodeRequest, vizdex: ServiceState) -> VisionEncodeResponse:
    started = time.perf_counter()
    encoder = vizdex.encoder(data.model)
    images = [
        load_image(
            item if isinstance(item, str) else msgspec.structs.asdict(item),
            vizdex.settings.images,
            min_side=encoder.decode_min_side,
        ).image
        for item in data.images
    ]
    vectors = encoder.encode_images(images, normalize=data.normalize)
    return VisionEncodeResponse(
        model=encoder.name,
        embeddings=vectors.tolist(),
        dimensions=encoder.dim,
        processing_time=time.perf_counter() - started,
    )
