"""The decode-stage loader: read → sha256 → dedupe → decode → thumbnail, in a decode thread.

It runs inside ``encoders.streaming.encode_stream``'s thread pool, so everything here is per item
and thread-safe. Content already in the collection is never decoded: the loader returns ``None``
for the image and the writer decides whether it moved, was touched, or is a duplicate.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import threading
from urllib.parse import unquote

from PIL import Image

from vizdex.core.errors import ImageRejectedError
from vizdex.encoders.device_jpeg import ends_complete, read_jpeg_header
from vizdex.encoders.streaming import JpegBytes
from vizdex.imaging import decode_image_bytes, read_input, sniff_format
from vizdex.imaging.fetch import split_url
from vizdex.imaging.settings import ImageInputSettings, format_bytes
from vizdex.indexer.dedupe import ShaFilter
from vizdex.indexer.settings import IndexerSettings
from vizdex.indexer.sources import Fresh, Item, Known, PathItem, Payload, Unchanged, UrlItem
from vizdex.indexer.storage import DataStore
from vizdex.indexer.thumbnails import make_thumbnail
from vizdex.search import Catalog

Loaded = tuple[Image.Image | JpegBytes | None, Payload]


def read_file(path: str, settings: ImageInputSettings) -> tuple[bytes, int, int]:
    """(bytes, size, mtime_ns) of a regular file the operator chose, within the byte cap.

    The size is checked from ``fstat`` before anything is read; the stat returned is the one of
    the bytes read, which is what a later rescan compares against. Messages leave the path out:
    failures are recorded next to the item they belong to.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)  # a FIFO must not hang us
    try:
        descriptor = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        raise ImageRejectedError("the file no longer exists", code="not_found") from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ImageRejectedError(f"the file cannot be read ({reason})", code="unreadable") from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise ImageRejectedError("not a regular file", code="not_found")
        if info.st_size == 0:
            raise ImageRejectedError("the file is empty (0 bytes)", code="empty")
        if info.st_size > settings.max_bytes:
            raise ImageRejectedError(
                f"the file is {format_bytes(info.st_size)}; "
                f"the limit is {format_bytes(settings.max_bytes)}",
                code="too_large",
            )
        chunks: list[bytes] = []
        remaining = info.st_size
        while remaining > 0 and (chunk := os.read(descriptor, remaining)):
            chunks.append(chunk)
            remaining -= len(chunk)
        if remaining or os.read(descriptor, 1):
            raise ImageRejectedError("the file changed while it was being read", code="corrupt")
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ImageRejectedError(f"the file cannot be read ({reason})", code="unreadable") from None
    finally:
        os.close(descriptor)
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return data, info.st_size, info.st_mtime_ns


def url_file_name(url: str) -> str | None:
    name = unquote(split_url(url).path.rsplit("/", 1)[-1])
    return name or None


_niced = threading.local()
DECODE_NICENESS = 10


def _yield_to_the_model() -> None:
    """Lower this decode thread's priority (Linux: per thread), once.

    On a machine where the model runs on the same cores, a decode thread that preempts one of
    the model's OpenMP threads stalls all of them at the next barrier; at a lower priority decoding
    fills the gaps instead. Where cores are free (a GPU host) it changes nothing.
    """
    if getattr(_niced, "done", False):
        return
    _niced.done = True
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed: as we are
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DECODE_NICENESS)


class ItemLoader:
    """Callable handed to ``encode_stream`` for one job of one collection."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        collection_id: int,
        store: DataStore,
        settings: IndexerSettings,
        images: ImageInputSettings,
        known: ShaFilter | None = None,
        device_decode: bool = False,
    ) -> None:
        self._catalog = catalog
        self._collection_id = collection_id
        self._store = store
        self._settings = settings
        self._images = images
        self._known = known
        self._device_decode = device_decode

    def __call__(self, item: Item, min_side: int | None) -> Loaded:
        _yield_to_the_model()
        size: int | None = None
        mtime_ns: int | None = None
        if isinstance(item, PathItem):
            if item.known_id is not None:
                return None, Unchanged(item.known_id)
            data, size, mtime_ns = read_file(item.path, self._images)
        elif isinstance(item, UrlItem):
            if item.known_id is not None:
                return None, Unchanged(item.known_id)
            data = read_input(item.url, self._images)  # the door's fetcher: SSRF checks, caps
        else:
            data = read_input(item.upload.data, self._images)
        sha = hashlib.sha256(data).hexdigest()
        if self._known is None or sha in self._known:  # most new content skips the query
            existing = self._catalog.find_by_sha256(self._collection_id, [sha])
            if sha in existing:
                return None, Known(sha, existing[sha], size, mtime_ns)
        keep_original = not isinstance(item, PathItem)
        if self._device_decode and sniff_format(data) == "JPEG" and ends_complete(data):
            return self._for_device(data, sha, size, mtime_ns, min_side, keep_original)
        decoded = decode_image_bytes(data, self._images, min_side=min_side, sha256=sha)
        if keep_original:
            self._store.put_original(sha, decoded.format, data)
        payload = Fresh(
            sha256=sha,
            width=decoded.width,
            height=decoded.height,
            format=decoded.format,
            byte_size=len(data),
            thumbnail=self._store.thumbnail_name(sha),
            size=size,
            mtime_ns=mtime_ns,
            thumbnail_data=self._thumbnail(sha, decoded.image),
        )
        return decoded.image, payload

    def _thumbnail(self, sha: str, image: Image.Image) -> bytes | None:
        """WebP bytes for the writer, made here from the decoded pixels; None if already stored."""
        if self._store.has(self._store.thumbnail_name(sha)):
            return None
        return make_thumbnail(
            image, longest=self._settings.thumbnail_size, quality=self._settings.thumbnail_quality
        )

    def _for_device(
        self,
        data: bytes,
        sha: str,
        size: int | None,
        mtime_ns: int | None,
        min_side: int | None,
        keep_original: bool,
    ) -> Loaded:
        """Only the header is read here, and the data checked: the pixels are decoded on the
        GPU, and the thumbnail is made by the writer from the stream's preview of them."""
        header = read_jpeg_header(data, self._images, check_data=self._settings.device_decode_check)
        if keep_original:
            self._store.put_original(sha, "JPEG", data)
        images = self._images

        def fallback() -> Image.Image:
            return decode_image_bytes(data, images, min_side=min_side, sha256=sha).image

        payload = Fresh(
            sha256=sha,
            width=header.width,
            height=header.height,
            format="JPEG",
            byte_size=len(data),
            thumbnail=self._store.thumbnail_name(sha),
            size=size,
            mtime_ns=mtime_ns,
        )
        return JpegBytes(data, fallback, header.orientation, header.width * header.height), payload
