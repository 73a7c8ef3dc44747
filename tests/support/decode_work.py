"""Counts the pixel decoding the image door does: the mechanism, where a stopwatch would guess.

``decoders``: pixel decoders started: Pillow's (``Image._getdecoder``, one per tile; not the raw
copy ``Image.fromarray`` makes of pixels already decoded) and libjpeg-turbo's
(``simplejpeg.decode_jpeg``, the door's JPEG path). ``loads``: ``load()`` calls on an opened image
file, which is where Pillow decodes (WebP's pixels come from its ``load``).
Refused "from the header" means both stay 0. The real functions run: the spy only counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import simplejpeg
from PIL import Image, ImageFile


@dataclass
class DecodeWork:
    decoders: int = 0
    loads: int = 0


@contextmanager
def counting_decodes() -> Iterator[DecodeWork]:
    work = DecodeWork()
    real_decoder = Image._getdecoder
    real_jpeg = simplejpeg.decode_jpeg
    real_load = Image.Image.load
    real_frombytes = Image.Image.frombytes
    copying = [0]  # inside frombytes: a copy of pixels in memory, not a decode

    def decoder(*args: Any, **kwargs: Any) -> Any:
        if not copying[0]:
            work.decoders += 1
        return real_decoder(*args, **kwargs)

    def frombytes(self: Image.Image, *args: Any, **kwargs: Any) -> Any:
        copying[0] += 1
        try:
            return real_frombytes(self, *args, **kwargs)
        finally:
            copying[0] -= 1

    def jpeg(*args: Any, **kwargs: Any) -> Any:
        work.decoders += 1
        return real_jpeg(*args, **kwargs)

    def load(self: Image.Image) -> Any:
        if isinstance(self, ImageFile.ImageFile):
            work.loads += 1
        return real_load(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Image, "_getdecoder", decoder)
        patch.setattr(simplejpeg, "decode_jpeg", jpeg)
        patch.setattr(Image.Image, "load", load)
        patch.setattr(Image.Image, "frombytes", frombytes)
        yield work
