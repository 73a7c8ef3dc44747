"""Images of a collection: list, read, change metadata, delete; their files and thumbnails."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Response, delete, get, patch
from litestar.datastructures import ResponseHeader
from litestar.params import JSONBody, Parameter
from litestar.response import File

from vizdex.imaging import media_type
from vizdex.search import ImageNotFoundError
from vizdex.web.routing import READS, WRITES, route
from vizdex.web.schemas import (
    INT64_MAX,
    SEQ_HEADER,
    SEQ_HEADERS,
    CollectionName,
    ImageIdParam,
    Metadata,
    check_metadata,
)
from vizdex.web.state import Vizdex
from vizdex.web.views import ImageOut, ImagePage, image_out

MAX_PAGE = 1000
# Stored files are user data: never sniffed into another type, never run as a page.
FILE_HEADERS = [
    ResponseHeader(
        name="X-Content-Type-Options",
        value="nosniff",
        description="the browser keeps to the media type",
        required=True,
    ),
    ResponseHeader(
        name="Content-Security-Policy",
        value="default-src 'none'; sandbox",
        description="the file is never a live page",
        required=True,
    ),
    # Litestar documents a file's Last-Modified as an RFC 3339 date-time; it is an HTTP date
    # (the value, documentation only, just makes the schema a string).
    ResponseHeader(
        name="last-modified",
        documentation_only=True,
        value="Mon, 01 Jan 2024 00:00:00 GMT",
        description="when the file last changed, as an HTTP date (RFC 9110)",
    ),
]


class ImagePatch(msgspec.Struct, forbid_unknown_fields=True):
    """``metadata`` replaces the image's user metadata (a JSON object)."""

    metadata: Metadata


@route(get, "/collections/{name:str}/images", READS, summary="List a collection's images")
def list_images(
    name: CollectionName,
    vizdex: Vizdex,
    after: Annotated[
        int,
        Parameter(
            ge=0,
            le=INT64_MAX,
            description="last id seen",
            schema_extra={"minimum": 0, "maximum": INT64_MAX},  # as ints, not floats
        ),
    ] = 0,
    limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = 100,
) -> ImagePage:
    images = vizdex.collections.list_images(name, after_id=after, limit=limit)
    return ImagePage(
        images=[image_out(name, image) for image in images],
        next_after=images[-1].id if len(images) == limit else None,
    )


@route(get, "/collections/{name:str}/images/{image_id:int}", READS, summary="One image's record")
def get_image(name: CollectionName, image_id: ImageIdParam, vizdex: Vizdex) -> ImageOut:
    return image_out(name, vizdex.collections.get_image(name, image_id))


@route(
    patch,
    "/collections/{name:str}/images/{image_id:int}",
    WRITES,
    summary="Replace an image's metadata",
    response_headers=SEQ_HEADERS,
)
def patch_image(
    name: CollectionName, image_id: ImageIdParam, data: JSONBody[ImagePatch], vizdex: Vizdex
) -> Response[ImageOut]:
    metadata = check_metadata(data.metadata)
    image = image_out(name, vizdex.search.update_metadata(name, image_id, metadata))
    return Response(image, headers={SEQ_HEADER: str(vizdex.search.collection_seq(name))})


@route(
    delete,
    "/collections/{name:str}/images/{image_id:int}",
    WRITES,
    summary="Delete an image and its vectors",
)
def delete_image(name: CollectionName, image_id: ImageIdParam, vizdex: Vizdex) -> None:
    if not vizdex.search.delete_images(name, [image_id]):
        raise ImageNotFoundError(
            f"image {image_id} does not exist in collection {name!r}", image_id=image_id
        )


@route(
    get,
    "/collections/{name:str}/images/{image_id:int}/file",
    READS,
    summary="The image's original file",
    media_type="image/*",
    response_headers=FILE_HEADERS,
)
def image_file(name: CollectionName, image_id: ImageIdParam, vizdex: Vizdex) -> File:
    stored = vizdex.files.original(name, image_id)
    return File(
        path=stored.path,
        filename=stored.filename,
        media_type=media_type(stored.format),
        content_disposition_type="inline",
    )


@route(
    get,
    "/collections/{name:str}/images/{image_id:int}/thumbnail",
    READS,
    summary="A small WebP preview of the image",
    media_type="image/webp",
    response_headers=FILE_HEADERS,
)
def image_thumbnail(name: CollectionName, image_id: ImageIdParam, vizdex: Vizdex) -> File:
    return File(
        path=vizdex.files.thumbnail(name, image_id),
        media_type="image/webp",
        content_disposition_type="inline",
        filename=f"{image_id}.webp",
    )
