"""Search a collection by text, image, stored image id or raw vector."""

from __future__ import annotations

import time
from typing import Annotated, Any, ClassVar

import msgspec
from litestar import post
from litestar.params import JSONBody

from vizdex.core.errors import InvalidInputError
from vizdex.search import MAX_K, InvalidQueryError, SearchOptions, SearchResult
from vizdex.web.inputs import decode_one
from vizdex.web.openapi import ENCODE, error_responses
from vizdex.web.routing import QUERIES, route
from vizdex.web.schemas import (
    CollectionName,
    CollectionRef,
    ImageId,
    ImageItem,
    Int32,
    JsonSchema,
    MinSeq,
    ModelName,
    QueryText,
    Rules,
    SearchFilter,
    documented,
    door_item,
    exactly_one_of,
    image_filter,
)
from vizdex.web.state import ServiceState, Vizdex
from vizdex.web.views import image_url

FLOAT32_MAX = 3.4028234663852886e38  # a larger number is not finite as a float32 query vector
QUERY_KINDS = ("text", "image", "image_id", "vector")
# `fuse` combines image models: it goes with `image` or `image_id` only.
FUSE_RULE: JsonSchema = {
    "anyOf": [
        {"properties": {"fuse": {"const": False}}},
        {"properties": {"text": {"type": "null"}, "vector": {"type": "null"}}},
    ]
}


class SearchRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Exactly one of ``text``, ``image``, ``image_id`` or ``vector``.

    ``fuse`` ranks by reciprocal-rank fusion over all the collection's models (image and
    image_id queries). ``min_score`` is a cosine cut-off. ``min_seq``: answer only once this
    replica has applied the collection's changes up to that sequence number (a write's ``seq``),
    waiting a bounded time, else 503 ``not_caught_up``.
    """

    schema_rules: ClassVar[Rules] = (exactly_one_of(*QUERY_KINDS), FUSE_RULE)

    text: QueryText | None = None
    image: ImageItem | None = None
    image_id: ImageId | None = None
    vector: (
        Annotated[
            list[Annotated[float, documented(minimum=-FLOAT32_MAX, maximum=FLOAT32_MAX)]],
            msgspec.Meta(min_length=1, max_length=65_536),
        ]
        | None
    ) = None
    model: ModelName | None = None
    k: Annotated[int, msgspec.Meta(ge=1, le=MAX_K)] = 10
    offset: Int32 = 0
    min_score: Annotated[float, documented(minimum=-1.0, maximum=1.0)] | None = None
    filter: SearchFilter | None = None
    fuse: bool = False
    min_seq: MinSeq | None = None


class MultimodalSearchRequest(SearchRequest, kw_only=True):
    collection: CollectionRef


class SearchHitOut(msgspec.Struct):
    id: int
    score: float  # cosine similarity, or the fused RRF score
    scores: dict[str, float]  # cosine per model that found it
    metadata: dict[str, Any]
    original_name: str | None
    width: int
    height: int
    format: str
    thumbnail_url: str
    file_url: str


class SearchResponse(msgspec.Struct):
    collection: str
    model: str
    hits: list[SearchHitOut]
    k: int
    offset: int
    approximate: bool
    fused: bool
    processing_time: float


def _options(query: SearchRequest) -> SearchOptions:
    filters = image_filter(query.filter)
    return SearchOptions(k=query.k, offset=query.offset, min_score=query.min_score, filters=filters)


def run_search(vizdex: ServiceState, collection: str, query: SearchRequest) -> SearchResult:
    given = [
        name
        for name, value in (
            ("text", query.text),
            ("image", query.image),
            ("image_id", query.image_id),
            ("vector", query.vector),
        )
        if value is not None
    ]
    if len(given) != 1:
        raise InvalidInputError(
            "give exactly one of `text`, `image`, `image_id` or `vector`"
            + (f" (got {', '.join(given)})" if given else "")
        )
    service = vizdex.search
    options = _options(query)
    if query.fuse and given[0] in ("text", "vector"):
        raise InvalidQueryError("`fuse` combines image models: use it with `image` or `image_id`")
    service.catch_up(collection, query.min_seq)
    if query.text is not None:
        return service.search_text(collection, query.text, model=query.model, options=options)
    if query.image is not None:
        service.get_collection(collection)  # a missing collection is a 404 before decoding
        image = decode_one(door_item(query.image), vizdex.settings.images, vizdex.min_side).image
        return service.search_image(
            collection, image, model=query.model, fuse=query.fuse, options=options
        )
    if query.image_id is not None:
        return service.search_similar(
            collection, query.image_id, model=query.model, fuse=query.fuse, options=options
        )
    assert query.vector is not None
    return service.search_vector(collection, query.vector, model=query.model, options=options)


def search_response(result: SearchResult, started: float) -> SearchResponse:
    return SearchResponse(
        collection=result.collection,
        model=result.model,
        hits=[
            SearchHitOut(
                id=hit.image_id,
                score=float(hit.score),
                scores={name: float(score) for name, score in hit.scores.items()},
                metadata=dict(hit.image.metadata),
                original_name=hit.image.original_name,
                width=hit.image.width,
                height=hit.image.height,
                format=hit.image.format,
                thumbnail_url=image_url(result.collection, hit.image_id, "thumbnail"),
                file_url=image_url(result.collection, hit.image_id, "file"),
            )
            for hit in result.hits
        ],
        k=result.k,
        offset=result.offset,
        approximate=result.approximate,
        fused=result.fused,
        processing_time=time.perf_counter() - started,
    )


# A query may need a model this server has not loaded, or one still back-filling: 409.
SEARCH_ERRORS = error_responses(*ENCODE, 409)


@route(
    post,
    "/collections/{name:str}/search",
    QUERIES,
    summary="Search a collection",
    responses=SEARCH_ERRORS,
)
def search_collection(
    name: CollectionName, data: JSONBody[SearchRequest], vizdex: Vizdex
) -> SearchResponse:
    started = time.perf_counter()
    return search_response(run_search(vizdex, name, data), started)


@route(
    post,
    "/multimodal/search",
    QUERIES,
    responses=SEARCH_ERRORS,
    tags=["multimodal"],  # and "search", from its area
    summary="Cross-modal search in a collection",
)
def multimodal_search(data: JSONBody[MultimodalSearchRequest], vizdex: Vizdex) -> SearchResponse:
    started = time.perf_counter()
    return search_response(run_search(vizdex, data.collection, data), started)
