"""Index snapshot files: one self-verifying file per (collection, model).

Layout: ``MAGIC | u64 header length | JSON header | FAISS payload | SHA-256 of everything before``.
The header holds the last sequence number the payload contains, so the two can never disagree,
and the checksum catches truncation and bit flips that FAISS itself would not notice (or would
crash on). Files are written to a temporary name, fsynced, renamed over the old one, and the
directory is fsynced: after a crash there is either the old file or the new one, whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from vizdex.search.errors import IndexCorruptError

log = logging.getLogger(__name__)

MAGIC = b"VZDXIDX1"
FORMAT_VERSION = 1
_HEADER_LENGTH = struct.Struct("<Q")
_DIGEST_SIZE = hashlib.sha256().digest_size
_PREFIX = len(MAGIC) + _HEADER_LENGTH.size
TEMP_SUFFIX = ".tmp"
CORRUPT_SUFFIX = ".corrupt"


def fsync_directory(directory: Path) -> None:
    """Makes a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def replacing(path: Path, mode: str = "wb") -> Iterator[IO[bytes]]:
    """A file written under a temporary name, then fsynced and renamed over ``path`` (and the
    rename made durable) when the block ends; removed instead if the block fails."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
    try:
        with open(temporary, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_snapshot(path: Path, header: dict[str, Any], payload: np.ndarray) -> int:
    """Atomically replaces ``path`` with a new snapshot; returns its size in bytes."""
    # The index folders are ours: a file or a link in their place is moved aside, like a
    # damaged snapshot, rather than failing every snapshot until someone looks.
    for folder in (path.parent.parent, path.parent):
        if os.path.lexists(folder) and not folder.is_dir():
            move_aside(folder, "not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    body = np.ascontiguousarray(payload, dtype=np.uint8)
    header_bytes = json.dumps(
        {**header, "format": FORMAT_VERSION, "payload_size": int(body.size)}, sort_keys=True
    ).encode("utf-8")
    digest = hashlib.sha256()
    with replacing(path) as handle:
        for piece in (MAGIC, _HEADER_LENGTH.pack(len(header_bytes)), header_bytes):
            digest.update(piece)
            handle.write(piece)
        view = body.data
        digest.update(view)
        handle.write(view)
        handle.write(digest.digest())
    return _PREFIX + len(header_bytes) + int(body.size) + _DIGEST_SIZE


def read_snapshot(path: Path) -> tuple[dict[str, Any], np.ndarray]:
    """(header, payload) of a verified snapshot; IndexCorruptError says what is wrong."""
    data = np.fromfile(path, dtype=np.uint8)
    if data.size < _PREFIX + _DIGEST_SIZE:
        raise IndexCorruptError(f"{path.name}: truncated ({data.size} bytes)")
    if data[: len(MAGIC)].tobytes() != MAGIC:
        raise IndexCorruptError(f"{path.name}: not a vizdex index file")
    (header_size,) = _HEADER_LENGTH.unpack(data[len(MAGIC) : _PREFIX].tobytes())
    if _PREFIX + header_size + _DIGEST_SIZE > data.size:
        raise IndexCorruptError(f"{path.name}: truncated (header runs past the end)")
    if hashlib.sha256(data[:-_DIGEST_SIZE].data).digest() != data[-_DIGEST_SIZE:].tobytes():
        raise IndexCorruptError(f"{path.name}: checksum mismatch (truncated or corrupted)")
    try:
        header = json.loads(data[_PREFIX : _PREFIX + header_size].tobytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IndexCorruptError(f"{path.name}: unreadable header: {error}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
        raise IndexCorruptError(f"{path.name}: unknown index file format")
    payload = data[_PREFIX + header_size : -_DIGEST_SIZE]
    if header.get("payload_size") != payload.size:
        raise IndexCorruptError(f"{path.name}: payload size does not match its header")
    return header, payload


def move_aside(path: Path, reason: str) -> Path | None:
    """Keeps a bad file for inspection as ``<name>.corrupt`` (replacing an older file); whatever
    else stands at ``path`` (a folder, a FIFO, a link) is moved aside under a name of its own.
    For what vizdex can remake: index files and folders, and the data directory's scratch ones."""
    if not os.path.lexists(path):
        return None
    target = path.with_name(path.name + CORRUPT_SUFFIX)
    if os.path.lexists(target) and not (path.is_file() and target.is_file()):
        target = path.with_name(f"{path.name}{CORRUPT_SUFFIX}.{time.time_ns()}")
    os.replace(path, target)
    fsync_directory(path.parent)
    log.error("%s moved aside to %s: %s", path, target.name, reason)
    return target


def remove_stale_temporaries(path: Path, *, older_than_s: float = 3600.0) -> None:
    """Deletes temporary files a crashed writer left behind for ``path``.

    Only old ones: another process may be writing a snapshot of the same index right now.
    """
    cutoff = time.time() - older_than_s
    for candidate in path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"):
        try:
            if candidate.stat().st_mtime < cutoff:
                candidate.unlink()
        except OSError:
            continue
