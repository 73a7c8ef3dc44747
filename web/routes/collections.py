"""Collections: create, list, inspect, delete; change their models while they serve."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Response, delete, get, patch, post
from litestar.params import JSONBody, Parameter
from litestar.status_codes import HTTP_202_ACCEPTED

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
    vizdex.storage.delete_collection(name)


class ModelAdd(msgspec.Struct, forbid_unknown_fields=True):
    """A model to add: one the server has loaded (VIZDEX_MODELS)."""

    model: ModelName


class ModelAdded(msgspec.Struct):
    """The collection as it is now (the model ``backfilling``, or ``ready`` when the collection
    had no images), and the back-fill job: follow ``job_url`` for its progress."""

    collection: CollectionOut
    job_id: int
    job_url: str
    state: str


class CollectionPatch(msgspec.Struct, forbid_unknown_fields=True):
    """The defaults for text and image queries that name no model; each must be a ready model of
    the collection (null: back to the model rule). Both change in one transaction."""

    text_model: ModelName | msgspec.UnsetType | None = msgspec.UNSET
    image_model: ModelName | msgspec.UnsetType | None = msgspec.UNSET


def _described(vizdex: Vizdex, name: str) -> CollectionOut:
    return summary_out(vizdex.collections.describe(name))


@route(
    post,
    "/collections/{name:str}/models",
    WRITES,
    summary="Add a model to a collection and back-fill its images",
    status_code=HTTP_202_ACCEPTED,
)
def add_model(
    name: CollectionName, data: JSONBody[ModelAdd], vizdex: Vizdex
) -> Response[ModelAdded]:
    _, job = vizdex.model_changes.add_model(name, data.model)
    url = f"/v1/jobs/{job.id}"
    return Response(
        ModelAdded(
            collection=_described(vizdex, name), job_id=job.id, job_url=url, state=job.state.value
        ),
        status_code=HTTP_202_ACCEPTED,
        headers={"Location": url},
    )


@route(
    patch,
    "/collections/{name:str}",
    WRITES,
    summary="Switch the default models for text and image queries",
)
def patch_collection(
    name: CollectionName, data: JSONBody[CollectionPatch], vizdex: Vizdex
) -> CollectionOut:
    changes = {
        key: value
        for key, value in (("text_model", data.text_model), ("image_model", data.image_model))
        if value is not msgspec.UNSET
    }
    vizdex.model_changes.set_defaults(name, **changes)
    return _described(vizdex, name)


ModelQuery = Annotated[
    str, Parameter(min_length=1, max_length=1000, description="the model to remove")
]


@route(
    delete,
    "/collections/{name:str}/models",
    WRITES,
    summary="Remove a model (not a default) with its vectors and index",
    status_code=200,
)
def remove_model(name: CollectionName, model: ModelQuery, vizdex: Vizdex) -> CollectionOut:
    vizdex.model_changes.remove_model(name, model)
    return _described(vizdex, name)
