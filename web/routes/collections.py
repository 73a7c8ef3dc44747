"""Collections: create, list, inspect, delete."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import delete, get, post
from litestar.params import JSONBody

from vizdex.web.routing import READS, WRITES, route
from vizdex.web.schemas import CollectionName, CollectionRef, ModelName
from vizdex.web.state import Vizdex
from vizdex.web.views import CollectionList, CollectionOut, collection_out, summary_out


class CollectionCreate(msgspec.Struct, forbid_unknown_fields=True):
    """``models`` default to every model the server loaded (VIZDEX_MODELS), like the CLI.

    ``index_factory`` is a FAISS factory string for large collections (e.g. ``IVF1024,Flat``);
    ``exact_max`` overrides how many vectors stay in an exact index.
    """

    name: CollectionRef
    models: (
        Annotated[
            list[ModelName],
            msgspec.Meta(min_length=1, max_length=8, extra_json_schema={"uniqueItems": True}),
        ]
        | None
    ) = None
    index_factory: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    exact_max: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] | None = None


@route(post, "/collections", WRITES, summary="Create a collection")
def create_collection(data: JSONBody[CollectionCreate], vizdex: Vizdex) -> CollectionOut:
    record = vizdex.search.create_collection(
        data.name, data.models, index_factory=data.index_factory, exact_max=data.exact_max
    )
    return collection_out(record, 0)


@route(get, "/collections", READS, summary="List collections")
def list_collections(vizdex: Vizdex) -> CollectionList:
    return CollectionList(
        collections=[summary_out(summary) for summary in vizdex.collections.summaries()]
    )


@route(
    get, "/collections/{name:str}", READS, summary="One collection, with image and vector counts"
)
def get_collection(name: CollectionName, vizdex: Vizdex) -> CollectionOut:
    return summary_out(vizdex.collections.describe(name))


@route(
    delete,
    "/collections/{name:str}",
    WRITES,
    summary="Delete a collection with its images, vectors and jobs",
)
def delete_collection(name: CollectionName, vizdex: Vizdex) -> None:
    vizdex.search.delete_collection(name)
