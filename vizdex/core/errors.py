"""The one domain-error hierarchy of vizdex.

Every package raises these; the web layer maps the *classes* to HTTP statuses in one place and the
indexer records ``code`` per failed file. Messages are written for the person who sent the input.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any


class VizdexError(Exception):
    """Base of every error vizdex raises on purpose."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


class InvalidInputError(VizdexError):
    """The request itself is wrong (bad value, wrong shape); resending it unchanged will fail."""

    code = "invalid_input"


class NotFoundError(VizdexError):
    """A named thing (model, collection, image, job) does not exist."""

    code = "not_found"


class ConflictError(VizdexError):
    """The request clashes with existing state (duplicate name, schema out of date)."""

    code = "conflict"


class UnavailableError(VizdexError):
    """The service cannot do this right now (overloaded, out of memory); retrying may work."""

    code = "unavailable"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class UnsupportedModelError(InvalidInputError):
    code = "unsupported_model"


class CapabilityError(InvalidInputError):
    """The model cannot do what was asked (e.g. text encoding on a vision-only model)."""

    code = "unsupported_operation"


class EncoderOutOfMemoryError(UnavailableError):
    code = "out_of_memory"


class ImageRejectedError(InvalidInputError):
    """An image input was refused by the image door; ``code`` says why.

    Codes: ``too_large``, ``too_many_pixels``, ``unsupported_format``, ``corrupt``, ``empty``,
    ``invalid_base64``, ``forbidden_path``, ``not_found``, ``invalid_url`` (does not parse),
    ``forbidden_url`` (parses, but is not fetched by policy), ``fetch_failed``,
    ``invalid_input`` (the input item itself has the wrong shape, e.g. both ``url`` and ``path``).
    """

    code = "corrupt"


def os_error_text(error: OSError) -> str:
    """An OS error as one line: what failed and where (``[Errno 28] ...`` reads badly)."""
    reason = error.strerror or type(error).__name__
    where = error.filename if error.filename is not None else None
    return f"{reason}: {where}" if where else reason


class StorageFullError(UnavailableError):
    """The disk (or quota) vizdex writes to is full. What was being written was not kept."""

    code = "storage_full"


_SQLITE_FULL = 13  # sqlite3.SQLITE_FULL
_SQLITE_IOERR = 10  # sqlite3.SQLITE_IOERR, the primary code of every SQLITE_IOERR_*
_POSTGRES_DISK_FULL = "53100"
_NOT_KEPT = "what was being written was not kept; free some space and try again"


def storage_full(error: BaseException, disk: Path | None = None) -> StorageFullError | None:
    """``error`` as a StorageFullError when it says the disk is full: an OS error (ENOSPC,
    EDQUOT), or a database's (SQLite's SQLITE_FULL, PostgreSQL's disk_full), also wrapped by
    SQLAlchemy (``.orig``) or chained (``__cause__``). SQLite reports a full disk as a plain
    "disk I/O error" too (e.g. when its shared-memory file cannot grow): with ``disk`` (the data
    directory), such an error while less than 1 MiB is free there counts as full."""
    for current in _causes(error):
        if isinstance(current, StorageFullError):
            return current
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" ({current.filename})" if current.filename else ""
            return StorageFullError(f"the disk is full{where}: {_NOT_KEPT}")
        sqlite_code = getattr(current, "sqlite_errorcode", None)
        sql_state = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if sqlite_code == _SQLITE_FULL or sql_state == _POSTGRES_DISK_FULL:
            return StorageFullError(f"the disk holding the catalog database is full: {_NOT_KEPT}")
        if isinstance(sqlite_code, int) and sqlite_code & 0xFF == _SQLITE_IOERR and _no_room(disk):
            return StorageFullError(f"the disk is full ({disk}): {_NOT_KEPT}")
    return None


class StorageReadOnlyError(UnavailableError):
    """vizdex may read, but not write, where it keeps its data. Nothing was written."""

    code = "storage_read_only"


_SQLITE_READONLY = 8  # sqlite3.SQLITE_READONLY, the primary code of every SQLITE_READONLY_*
_READ_ONLY_CATALOG = (
    "the catalog database can be read but not written (SQLite opened it read-only: is its "
    "folder writable, and are catalog.db-wal and catalog.db-shm beside it regular files?)"
)


def storage_read_only(
    error: BaseException, disk: Path | None = None
) -> StorageReadOnlyError | None:
    """``error`` as a StorageReadOnlyError when a write was refused: SQLite's SQLITE_READONLY
    (e.g. its shared-memory file cannot be opened for writing), a read-only filesystem (EROFS),
    or, with ``disk`` (the data directory), a permission error on a file under it."""
    for current in _causes(error):
        if isinstance(current, StorageReadOnlyError):
            return current
        sqlite_code = getattr(current, "sqlite_errorcode", None)
        if isinstance(sqlite_code, int) and sqlite_code & 0xFF == _SQLITE_READONLY:
            return StorageReadOnlyError(f"{_READ_ONLY_CATALOG}: nothing was written")
        if isinstance(current, OSError) and current.errno == errno.EROFS:
            where = f" ({current.filename})" if current.filename else ""
            return StorageReadOnlyError(f"the disk is read-only{where}: nothing was written")
        if (
            isinstance(current, OSError)
            and current.errno in (errno.EACCES, errno.EPERM)
            and _inside(current.filename, disk)
        ):
            return StorageReadOnlyError(
                f"vizdex may not write {current.filename}: nothing was written"
            )
    return None


def storage_error(error: BaseException, disk: Path | None = None) -> UnavailableError | None:
    """``error`` as the storage problem it reports (full, or read-only), else None."""
    return storage_full(error, disk) or storage_read_only(error, disk)


def _causes(error: BaseException) -> list[BaseException]:
    """``error`` and what it wraps (SQLAlchemy's ``.orig``) or was raised from, in order."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not known for known in seen):
        seen.append(current)
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return seen


def _inside(filename: object, disk: Path | None) -> bool:
    if disk is None or not isinstance(filename, str | os.PathLike):
        return False
    return Path(os.path.abspath(filename)).is_relative_to(os.path.abspath(disk))


def _no_room(disk: Path | None) -> bool:
    """Whether the filesystem of ``disk`` (or its nearest existing parent) is about full."""
    while disk is not None:
        try:
            stats = os.statvfs(disk)
        except FileNotFoundError:
            disk = disk.parent if disk.parent != disk else None
            continue
        except OSError:
            return False
        return stats.f_bavail * stats.f_frsize < 1 << 20
    return False
