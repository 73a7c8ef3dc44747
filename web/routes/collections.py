"""Collections: create, list, inspect, delete."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import delete, get, post
from litestar.params import JSONBody

from vizdex.web.auth import READ_ONLY
from vizdex.web.openapi import READ, WRITE, error_responses
from vizdex.web.routes.search import CollectionName
from vizdex.web.schemas import ModelName
from vizdex.web.state import ServiceState, Vizdex
from vizdex.web.views import CollectionList, CollectionOut, IndexOut, collection_out


class CollectionCreate(msgspec.Struct, forbid_unknown_fields=True):
    """``models`` default to every model the server loaded (VIZDEX_MODELS), like the CLI.

    ``index_factory`` is a FAISS factory string for large collections (e.g. ``IVF1024,Flat``);
    ``exact_max`` overrides how many vectors stay in an exact index.
    """

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    models: Annotated[list[ModelName], msgspec.Meta(min_length=1, max_length=8)] | None = None
    index_factory: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    exact_max: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] | None = None


def _indexes(vizdex: ServiceState, name: str) -> list[IndexOut]:
    service = vizdex.search
    record = service.get_collection(name)
    out = []
    for model in record.models:
        info = service.indexes.info(record, model)
        out.append(IndexOut(model=model, kind=info.kind, vectors=info.count, dimensions=info.dim))
    return out


@post(
    "/collections",
    sync_to_thread=True,
    tags=["collections"],
    summary="Create a collection",
    responses=error_responses(*WRITE),
)
def create_collection(data: JSONBody[CollectionCreate], vizdex: Vizdex) -> CollectionOut:
    record = vizdex.search.create_collection(
        data.name, data.models, index_factory=data.index_factory, exact_max=data.exact_max
    )
    return collection_out(record, 0)


@get(
    "/collections",
    sync_to_thread=True,
    tags=["collections"],
    summary="List collections",
    opt=READ_ONLY,
    responses=error_responses(*READ),
)
def list_collections(vizdex: Vizdex) -> CollectionList:
    service = vizdex.search
    return CollectionList(
        collections=[
            collection_out(record, service.catalog.count_images(record.id))
            for record in service.list_collections()
        ]
    )


@get(
    "/collections/{name:str}",
    sync_to_thread=True,
    tags=["collections"],
    summary="One collection, with image and vector counts",
    opt=READ_ONLY,
    responses=error_responses(*READ),
)
def get_collection(name: CollectionName, vizdex: Vizdex) -> CollectionOut:
    service = vizdex.search
    record = service.get_collection(name)
    return collection_out(record, service.catalog.count_images(record.id), _indexes(vizdex, name))


@delete(
    "/collections/{name:str}",
    sync_to_thread=True,
    tags=["collections"],
    summary="Delete a collection with its images, vectors and jobs",
    responses=error_responses(*WRITE),
)
def delete_collection(name: CollectionName, vizdex: Vizdex) -> None:
    vizdex.search.delete_collection(name)
