"""Images of a collection: list, read, change metadata, delete."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import delete, get, patch
from litestar.params import JSONBody, Parameter

from vizdex.search import ImageNotFoundError
from vizdex.web.auth import READ_ONLY
from vizdex.web.openapi import READ, WRITE, error_responses
from vizdex.web.routes.search import CollectionName
from vizdex.web.schemas import INT64_MAX, check_metadata
from vizdex.web.state import Vizdex
from vizdex.web.views import ImageOut, ImagePage, image_out

ImageIdParam = Annotated[int, Parameter(ge=1, le=INT64_MAX, description="image id")]
MAX_PAGE = 1000


class ImagePatch(msgspec.Struct, forbid_unknown_fields=True):
    """``metadata`` replaces the image's user metadata (a JSON object)."""

    metadata: dict[str, Any]


@get(
    "/collections/{name:str}/images",
    sync_to_thread=True,
    tags=["images"],
    summary="List a collection's images",
    opt=READ_ONLY,
    responses=error_responses(*READ),
)
def list_images(
    name: CollectionName,
    vizdex: Vizdex,
    after: Annotated[int, Parameter(ge=0, le=INT64_MAX, description="last id seen")] = 0,
    limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = 100,
) -> ImagePage:
    catalog = vizdex.search.catalog
    record = catalog.get_collection(name)
    images = catalog.list_images(record.id, after_id=after, limit=limit)
    return ImagePage(
        images=[image_out(name, image) for image in images],
        next_after=images[-1].id if len(images) == limit else None,
    )


@get(
    "/collections/{name:str}/images/{image_id:int}",
    sync_to_thread=True,
    tags=["images"],
    summary="One image's record",
    opt=READ_ONLY,
    responses=error_responses(*READ),
)
def get_image(name: CollectionName, image_id: ImageIdParam, vizdex: Vizdex) -> ImageOut:
    catalog = vizdex.search.catalog
    record = catalog.get_collection(name)
    return image_out(name, catalog.get_image(record.id, image_id))


@patch(
    "/collections/{name:str}/images/{image_id:int}",
    sync_to_thread=True,
    tags=["images"],
    summary="Replace an image's metadata",
    responses=error_responses(*WRITE),
)
def patch_image(
    name: CollectionName, image_id: ImageIdParam, data: JSONBody[ImagePatch], vizdex: Vizdex
) -> ImageOut:
    metadata = check_metadata(data.metadata)
    return image_out(name, vizdex.search.update_metadata(name, image_id, metadata))


@delete(
    "/collections/{name:str}/images/{image_id:int}",
    sync_to_thread=True,
    tags=["images"],
    summary="Delete an image and its vectors",
    responses=error_responses(*WRITE),
)
def delete_image(name: CollectionName, image_id: ImageIdParam, vizdex: Vizdex) -> None:
    if not vizdex.search.delete_images(name, [image_id]):
        raise ImageNotFoundError(
            f"image {image_id} does not exist in collection {name!r}", image_id=image_id
        )
