"""Image inputs of a request -> decoded images, through the one door (``encoders.images``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from litestar.datastructures import UploadFile

from vizdex.core.errors import ImageRejectedError, InvalidInputError
from vizdex.imaging import DecodedImage, load_image
from vizdex.imaging.settings import ImageInputSettings
from vizdex.web.schemas import ImageItem, door_item

if TYPE_CHECKING:
    from vizdex.encoders.base import Encoder

DoorItem = str | bytes | Mapping[str, Any]


def read_upload(upload: UploadFile, settings: ImageInputSettings) -> bytes:
    """An uploaded file's bytes; one byte past the cap is enough for the door to refuse it."""
    upload.file.seek(0)
    data: bytes = upload.file.read(settings.max_bytes + 1)
    return data


def json_items(items: Sequence[ImageItem]) -> list[DoorItem]:
    """The door's items; an object without exactly one of its keys is a malformed request,
    refused whole, on the bulk route too (the schema says so; only image *content* fails alone)."""
    found: list[DoorItem] = []
    for index, item in enumerate(items):
        given = door_item(item)
        if isinstance(given, dict) and len(given) != 1:
            raise InvalidInputError(
                f"image {index}: give exactly one of 'data', 'url' or 'path' for an image",
                index=index,
            )
        found.append(given)
    return found


def decode_one(
    item: DoorItem, settings: ImageInputSettings, min_side: int | None, *, index: int | None = None
) -> DecodedImage:
    """Decode one input; a refusal names which input it was when there are several."""
    try:
        return load_image(item, settings, min_side=min_side)
    except ImageRejectedError as error:
        if index is None:
            raise
        raise ImageRejectedError(
            f"image {index}: {error.message}", code=error.code, index=index, **error.details
        ) from None


class RequestImages:
    """A request's images, decoded and preprocessed one at a time for the encoder that reads them.

    Only one decoded image is alive at once: twenty-eight large images cost one image's memory
    plus twenty-eight small pixel tensors, not twenty-eight decoded bitmaps.
    """

    def __init__(self, items: Sequence[DoorItem], settings: ImageInputSettings) -> None:
        self._items = list(items)
        self._settings = settings

    def __len__(self) -> int:
        return len(self._items)

    def pixels(self, encoder: Encoder) -> torch.Tensor:
        # Rows go straight into one batch tensor: a list then torch.cat would hold every row twice.
        batch: torch.Tensor | None = None
        for index, item in enumerate(self._items):
            decoded = decode_one(item, self._settings, encoder.decode_min_side, index=index)
            with decoded.image as image:
                row = encoder.preprocess([image])
            if batch is None:
                batch = row.new_empty((len(self._items), *row.shape[1:]))
            batch[index] = row[0]
        assert batch is not None, "pixels() of an empty request"
        return batch

    def vectors(self, encoder: Encoder, *, normalize: bool = True) -> np.ndarray:
        if not self._items:
            return np.zeros((0, encoder.dim), dtype=np.float32)
        return encoder.encode_pixels(self.pixels(encoder), normalize=normalize)
