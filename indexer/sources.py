"""What an ingestion takes in (a request) and the items that flow through the pipeline."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vizdex.core.errors import InvalidInputError
from vizdex.imaging.fetch import split_url


@dataclass(frozen=True)
class Upload:
    """Image bytes sent by a client; ``name`` is the file name it had, if any."""

    data: bytes
    name: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestRequest:
    """One ingestion: folders and files on this machine, uploaded bytes and http(s) URLs.

    ``files_from`` names a text file with one path per line (read as a stream, so the list can be
    longer than memory). ``prune`` removes images whose files under the given folders are gone.
    ``positions``: where each upload, then each URL, stood in the request that sent them (an API
    request mixes them); outcomes and failures are numbered so. By default uploads come first.
    A chunk of a queued job keeps the positions its items had in the whole request.
    """

    paths: tuple[str, ...] = ()
    files_from: str | None = None
    uploads: tuple[Upload, ...] = ()
    urls: tuple[str, ...] = ()
    prune: bool = False
    positions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not (self.paths or self.files_from or self.uploads or self.urls):
            raise InvalidInputError("nothing to ingest: give folders, files, uploads or URLs")
        for url in self.urls:
            # Syntax refuses the whole request (invalid_url), as undecodable base64 does; a
            # scheme other than http(s) is the fetch policy's to refuse, item by item
            # (forbidden_url), as on every other route.
            split_url(url)
        sent = len(self.uploads) + len(self.urls)
        if self.positions and (
            len(self.positions) != sent
            or len(set(self.positions)) != sent
            or min(self.positions) < 0
        ):
            raise InvalidInputError(f"positions must number the {sent} uploads and URLs once each")

    def numbered(self) -> tuple[list[tuple[int, Upload]], list[tuple[int, str]]]:
        """The uploads and the URLs, each with its position in the request."""
        count = len(self.uploads)
        positions = self.positions or range(count + len(self.urls))
        return (
            list(zip(positions[:count], self.uploads, strict=True)),
            list(zip(positions[count:], self.urls, strict=True)),
        )

    @property
    def kind(self) -> str:
        """The job kind: uploads alone are an ``upload`` job, anything else an ``ingest``."""
        only_uploads = self.uploads and not (self.paths or self.files_from or self.urls)
        return "upload" if only_uploads else "ingest"

    def describe(self) -> str:
        """The job's ``source``: also how a re-run of the same command is recognised."""
        parts = [os.path.abspath(path) for path in self.paths]
        if self.files_from:
            parts.append(f"files from {os.path.abspath(self.files_from)}")
        parts.extend(self.urls)
        if self.uploads:
            parts.append(f"{len(self.uploads)} upload{'s' if len(self.uploads) != 1 else ''}")
        text = ", ".join(parts)
        return f"{text} (prune)" if self.prune else text


# -- pipeline items ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PathItem:
    """A file found on disk, with what the catalog already knows about its path.

    ``known_id``: the image recorded at this path with the same size and mtime (unchanged: it is
    not read again). ``other_rows``: other images still claim this path (a changed file, or what a
    crash between writes left behind); they are removed once the path's content is settled.
    """

    path: str
    size: int | None = None  # None: stat failed (the loader reports why)
    mtime_ns: int | None = None
    known_id: int | None = None
    other_rows: bool = False


@dataclass(frozen=True)
class UploadItem:
    index: int  # position in the request, so outcomes can be matched to what was sent
    upload: Upload


@dataclass(frozen=True)
class UrlItem:
    url: str
    known_id: int | None = None  # already ingested from this URL: not fetched again
    index: int = 0  # position in the request, as an upload's


Item = PathItem | UploadItem | UrlItem


def display_name(item: Item) -> str:
    """How an item is named in failures and logs."""
    if isinstance(item, PathItem):
        return item.path
    if isinstance(item, UrlItem):
        return item.url
    name = item.upload.name
    return f"upload #{item.index + 1}" + (f" ({name})" if name else "")


# -- what the loader found ---------------------------------------------------------------------


@dataclass(frozen=True)
class Unchanged:
    """Already indexed from this very path or URL; nothing was read."""

    image_id: int


@dataclass(frozen=True)
class Known:
    """The content (by sha256) is already in the collection: not decoded, not embedded."""

    sha256: str
    image_id: int
    size: int | None = None  # stat of the file as read (path items)
    mtime_ns: int | None = None


@dataclass(frozen=True)
class Fresh:
    """New content, decoded (or handed to the device decoder), with its thumbnail's name.

    The thumbnail file is written by the writer just before the row that names it is committed:
    from ``thumbnail_data`` when the loader made it, else from the stream's preview of the pixels.
    """

    sha256: str
    width: int
    height: int
    format: str
    byte_size: int
    thumbnail: str  # relative to the data directory
    size: int | None = None
    mtime_ns: int | None = None
    thumbnail_data: bytes | None = field(default=None, compare=False, repr=False)


Payload = Unchanged | Known | Fresh
