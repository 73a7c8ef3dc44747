"""Multimodal endpoints: images and texts into one space, and zero-shot matching."""

from __future__ import annotations

import time
from typing import Annotated, ClassVar

import msgspec
import numpy as np
from litestar import post
from litestar.params import JSONBody

from vizdex.core.errors import CapabilityError, InvalidInputError
from vizdex.web.inputs import RequestImages, json_items
from vizdex.web.routing import QUERIES, route
from vizdex.web.schemas import MAX_IMAGES, ImageItem, ModelName, QueryText, Rules, Text
from vizdex.web.state import Vizdex

MAX_TEXTS = 1024


class MultimodalEncodeRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Images, texts or both, embedded by one multimodal model (default: the first loaded)."""

    schema_rules: ClassVar[Rules] = (
        {
            "anyOf": [
                {"required": [name], "properties": {name: {"type": "array", "minItems": 1}}}
                for name in ("images", "texts")
            ]
        },
    )

    images: Annotated[list[ImageItem], msgspec.Meta(max_length=MAX_IMAGES)] | None = None
    texts: Annotated[list[Text], msgspec.Meta(max_length=MAX_TEXTS)] | None = None
    model: ModelName | None = None
    normalize: bool = True


class MultimodalEncodeResponse(msgspec.Struct):
    model: str
    dimensions: int
    image_embeddings: list[list[float]]
    text_embeddings: list[list[float]]
    processing_time: float


class MatchRequest(msgspec.Struct, forbid_unknown_fields=True):
    images: Annotated[list[ImageItem], msgspec.Meta(min_length=1, max_length=MAX_IMAGES)]
    texts: Annotated[list[QueryText], msgspec.Meta(min_length=1, max_length=MAX_IMAGES)]
    model: ModelName | None = None


class MatchResponse(msgspec.Struct):
    """``scores[i][j]``: cosine of image i and text j; ``probabilities[i]``: softmax over texts."""

    model: str
    scores: list[list[float]]
    probabilities: list[list[float]]
    logit_scale: float
    processing_time: float


@route(post, "/multimodal/encode", QUERIES, summary="Encode images and/or texts")
def multimodal_encode(
    data: JSONBody[MultimodalEncodeRequest], vizdex: Vizdex
) -> MultimodalEncodeResponse:
    started = time.perf_counter()
    if not data.images and not data.texts:
        raise InvalidInputError("send `images`, `texts` or both")
    if data.model is None:
        encoder = next((e for e in vizdex.encoders.values() if e.supports_text), None)
        if encoder is None:
            raise CapabilityError("no loaded model encodes text and images; load a CLIP model")
    else:
        encoder = vizdex.encoder(data.model)
        if not encoder.supports_text:
            raise CapabilityError(
                f"model {encoder.name!r} is vision-only; use /v1/vision/encode or a CLIP model",
                model=encoder.name,
            )
    empty = np.zeros((0, encoder.dim), dtype=np.float32)
    images = RequestImages(json_items(data.images or []), vizdex.settings.images)
    image_vectors = images.vectors(encoder, normalize=data.normalize)
    text_vectors = (
        encoder.encode_texts(data.texts, normalize=data.normalize) if data.texts else empty
    )
    return MultimodalEncodeResponse(
        model=encoder.name,
        dimensions=encoder.dim,
        image_embeddings=image_vectors.tolist(),
        text_embeddings=text_vectors.tolist(),
        processing_time=time.perf_counter() - started,
    )


@route(post, "/multimodal/match", QUERIES, summary="Zero-shot: score images against texts")
def multimodal_match(data: JSONBody[MatchRequest], vizdex: Vizdex) -> MatchResponse:
    started = time.perf_counter()
    images = RequestImages(json_items(data.images), vizdex.settings.images)
    match = vizdex.search.match_texts(images, data.texts, model=data.model)
    return MatchResponse(
        model=match.model,
        scores=np.asarray(match.scores, dtype=np.float32).tolist(),
        probabilities=np.asarray(match.probabilities, dtype=np.float64).tolist(),
        logit_scale=match.logit_scale,
        processing_time=time.perf_counter() - started,
    )
