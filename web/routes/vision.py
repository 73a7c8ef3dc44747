"""The seed's vision endpoints: models, encode, similarity and bulk encode."""

from __future__ import annotations

import base64
import time
from functools import partial
from typing import Annotated, Any

import anyio.to_thread
import msgspec
import numpy as np
from litestar import Request, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions import ValidationException
from litestar.openapi.spec import Operation
from litestar.params import JSONBody

from vizdex.encoders.base import Encoder
from vizdex.encoders.batched_encoder import BatchedEncoder
from vizdex.encoders.streaming import encode_stream
from vizdex.web.inputs import DoorItem, RequestImages, decode_one, json_items, read_upload
from vizdex.web.limits import FORM_FLAG, Form, body_kind, read_form, read_json
from vizdex.web.openapi import FORM_MODEL, body_operation, json_schema, multipart_schema
from vizdex.web.routing import QUERIES, READS, route
from vizdex.web.schemas import MAX_IMAGES, ImageItem, ModelName, Tensor
from vizdex.web.state import ServiceState, Vizdex

MAX_BATCH_IMAGES = 100_000  # msgspec's bound; each app's schema says VIZDEX_MAX_BATCH_ITEMS

Images = Annotated[list[ImageItem], msgspec.Meta(min_length=1, max_length=MAX_IMAGES)]
Item = DoorItem | UploadFile


class ModelInfo(msgspec.Struct):
    name: str
    kind: str
    dimensions: int
    device: str
    dtype: str  # of weights and activations (float32 around int8 linear layers)
    precision: str  # what computes the vectors: float32, float16, bfloat16 or int8


class ModelList(msgspec.Struct):
    models: list[ModelInfo]


class VisionEncodeRequest(msgspec.Struct, forbid_unknown_fields=True):
    images: Images
    model: ModelName | None = None
    normalize: bool = True
    return_tensors: bool = False  # embeddings as one base64 float32 array instead of lists


class VisionEncodeResponse(msgspec.Struct):
    model: str
    dimensions: int
    processing_time: float
    embeddings: list[list[float]] | None = None
    tensor: Tensor | None = None


class SimilarityRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``scores[i][j]`` is the cosine similarity of ``images[i]`` and ``others[j]``
    (``images[j]`` when ``others`` is left out)."""

    images: Images
    others: Annotated[list[ImageItem], msgspec.Meta(max_length=MAX_IMAGES)] | None = None
    model: ModelName | None = None


class SimilarityResponse(msgspec.Struct):
    model: str
    scores: list[list[float]]
    processing_time: float


class BatchRequest(msgspec.Struct, forbid_unknown_fields=True):
    images: Annotated[list[ImageItem], msgspec.Meta(min_length=1, max_length=MAX_BATCH_IMAGES)]
    model: ModelName | None = None
    normalize: bool = True


class BatchFailure(msgspec.Struct):
    index: int
    code: str
    detail: str


class BatchResponse(msgspec.Struct):
    """``embeddings[i]`` is null exactly when ``images[i]`` failed; ``errors`` says why."""

    model: str
    dimensions: int
    count: int
    failed: int
    embeddings: list[list[float] | None]
    errors: list[BatchFailure]
    processing_time: float


def tensor_of(vectors: np.ndarray) -> Tensor:
    array = np.ascontiguousarray(vectors, dtype="<f4")
    return Tensor(
        dtype="float32",
        shape=list(array.shape),
        data=base64.b64encode(array.tobytes()).decode("ascii"),
    )


def _door(item: Item, vizdex: ServiceState) -> DoorItem:
    return read_upload(item, vizdex.settings.images) if isinstance(item, UploadFile) else item


_ENCODE_FORM = multipart_schema(
    "images",
    MAX_IMAGES,
    {"model": FORM_MODEL, "normalize": FORM_FLAG, "return_tensors": FORM_FLAG},
)


async def _encode_input(
    request: Request[Any, Any, Any], vizdex: ServiceState
) -> tuple[list[Item], VisionEncodeRequest]:
    if body_kind(request) == "json":
        body = await read_json(request, VisionEncodeRequest, vizdex.settings.limits.json_bytes)
        return list(json_items(body.images)), body
    form: Form = await read_form(request, MAX_IMAGES)
    if not form.files:
        raise ValidationException("send one or more image files as multipart parts")
    options = VisionEncodeRequest(
        images=[],
        model=form.text("model"),
        normalize=form.flag("normalize", True),
        return_tensors=form.flag("return_tensors", False),
    )
    return list(form.files), options


def _encode(
    vizdex: ServiceState, items: list[Item], options: VisionEncodeRequest, started: float
) -> VisionEncodeResponse:
    encoder = vizdex.encoder(options.model)
    images = RequestImages([_door(item, vizdex) for item in items], vizdex.settings.images)
    vectors = images.vectors(encoder, normalize=options.normalize)
    response = VisionEncodeResponse(model=encoder.name, dimensions=encoder.dim, processing_time=0.0)
    if options.return_tensors:
        response.tensor = tensor_of(vectors)
    else:
        response.embeddings = vectors.tolist()
    response.processing_time = time.perf_counter() - started
    return response


@route(get, "/models", READS, summary="Loaded models", sync_to_thread=False)
def list_models(vizdex: Vizdex) -> ModelList:
    return ModelList(
        models=[msgspec.convert(e.describe(), ModelInfo) for e in vizdex.encoders.values()]
    )


@route(
    post,
    "/vision/encode",
    QUERIES,
    summary="Encode images",
    description="JSON with base64 / data: URL / URL / path items, or multipart image files.",
    operation_class=body_operation(VisionEncodeRequest, _ENCODE_FORM),
)
async def vision_encode(request: Request[Any, Any, Any], vizdex: Vizdex) -> VisionEncodeResponse:
    started = time.perf_counter()
    items, options = await _encode_input(request, vizdex)
    return await anyio.to_thread.run_sync(partial(_encode, vizdex, items, options, started))


@route(post, "/vision/similarity", QUERIES, summary="Similarity matrix of two lists of images")
def vision_similarity(data: JSONBody[SimilarityRequest], vizdex: Vizdex) -> SimilarityResponse:
    started = time.perf_counter()
    everything = [*data.images, *(data.others or [])]
    images = RequestImages(json_items(everything), vizdex.settings.images)
    rows = len(data.images)
    split = rows if data.others is not None else None
    matrix = vizdex.search.image_similarity(images, model=data.model, rows=split)
    block = matrix.scores[:rows, rows:] if data.others is not None else matrix.scores
    return SimilarityResponse(
        model=matrix.model,
        scores=np.asarray(block, dtype=np.float32).tolist(),
        processing_time=time.perf_counter() - started,
    )


def batch_operation(items: int, files: int) -> type[Operation]:
    """The batch route's body: at most ``items`` images (``VIZDEX_MAX_BATCH_ITEMS``), at most
    ``files`` of them as file parts (the app's multipart part limit)."""
    body = json_schema(BatchRequest)
    body["properties"]["images"]["maxItems"] = min(items, MAX_BATCH_IMAGES)
    form = multipart_schema("images", files, {"model": FORM_MODEL, "normalize": FORM_FLAG})
    return body_operation(body, form)


def _bulk_encoder(vizdex: ServiceState, model: str | None) -> Encoder:
    encoder = vizdex.encoder(model)
    if isinstance(encoder, BatchedEncoder):
        return encoder.patient(vizdex.settings.batching.bulk_wait_s)
    return encoder


def _batch(
    vizdex: ServiceState, items: list[Item], model: str | None, normalize: bool, started: float
) -> BatchResponse:
    encoder = _bulk_encoder(vizdex, model)
    settings = vizdex.settings

    def load(entry: tuple[int, Item], min_side: int | None) -> tuple[Any, int]:
        index, item = entry
        return decode_one(_door(item, vizdex), settings.images, min_side).image, index

    embeddings: list[list[float] | None] = [None] * len(items)
    errors: list[BatchFailure] = []
    batch_size = settings.batching.max_batch or settings.encoders.batch_size
    for batch in encode_stream(
        list(enumerate(items)),
        [encoder],
        load,
        batch_size=batch_size,
        workers=settings.encoders.decode_workers,
        normalize=normalize,
    ):
        for index, vector in zip(batch.payloads, batch.vectors[encoder.name].tolist(), strict=True):
            embeddings[index] = vector
        for (index, _), error in batch.failures:
            errors.append(BatchFailure(index=index, code=error.code, detail=error.message))
    errors.sort(key=lambda failure: failure.index)
    return BatchResponse(
        model=encoder.name,
        dimensions=encoder.dim,
        count=len(items) - len(errors),
        failed=len(errors),
        embeddings=embeddings,
        errors=errors,
        processing_time=time.perf_counter() - started,
    )


@route(
    post,
    "/vision/batch",
    QUERIES,
    summary="Encode many images at once",
    description="Images are decoded in parallel and streamed to the model in batches; each "
    "image fails alone (its embedding is null and `errors` says why).",
    operation_class=batch_operation(MAX_BATCH_IMAGES, MAX_BATCH_IMAGES),
)
async def vision_batch(request: Request[Any, Any, Any], vizdex: Vizdex) -> BatchResponse:
    started = time.perf_counter()
    limit = vizdex.settings.limits.batch_items
    items: list[Item]
    if body_kind(request) == "json":
        body = await read_json(request, BatchRequest, vizdex.settings.limits.json_bytes)
        items, model, normalize = list(json_items(body.images)), body.model, body.normalize
    else:
        # Every file part is a part of the form, and forms hold at most `upload_files` of them.
        form = await read_form(request, min(limit, vizdex.settings.limits.upload_files))
        if not form.files:
            raise ValidationException("send one or more image files as multipart parts")
        items, model, normalize = list(form.files), form.text("model"), form.flag("normalize", True)
    if len(items) > limit:
        raise ValidationException(f"at most {limit} images per batch request, got {len(items)}")
    return await anyio.to_thread.run_sync(partial(_batch, vizdex, items, model, normalize, started))
