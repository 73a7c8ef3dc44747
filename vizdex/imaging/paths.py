"""Image files on this server's disk: allowed roots, and reads that a swapped symlink cannot escape.

Paths: the string is percent-decoded exactly once (``%252e`` becomes the literal name ``%2e``,
never ``.``), then resolved with ``realpath`` and must sit inside an allowed root by
``commonpath`` (so ``/data2`` is not inside ``/data`` and symlinks out of a root are refused).
"""

from __future__ import annotations

import errno
import os
import pathlib
import stat
from urllib.parse import unquote

from vizdex.core.errors import ImageRejectedError
from vizdex.imaging.settings import ImageInputSettings, format_bytes


def resolve_allowed_path(path: str, settings: ImageInputSettings) -> pathlib.Path:
    """The real path of an existing file inside an allowed root, for a path a client sent.

    Relative paths are looked up under each root in order. Refuses with ``forbidden_path`` (no
    roots configured, NUL bytes, outside every root after ``realpath``) or ``not_found``.
    """
    if not settings.allowed_roots:
        raise forbidden_path("reading image files from this server's disk is not enabled")
    decoded = _percent_decode_once(path)
    roots = _real_roots(settings)
    candidates = [decoded] if os.path.isabs(decoded) else [os.path.join(r, decoded) for r in roots]
    inside = False
    for candidate in candidates:
        real = os.path.realpath(candidate)
        if not _within_any(real, roots):
            continue
        inside = True
        if os.path.isfile(real):
            return pathlib.Path(real)
    if inside:
        raise ImageRejectedError(f"there is no image file at {path!r}", code="not_found")
    raise forbidden_path(f"{path!r} is outside the folders this server may read images from")


def forbidden_path(message: str) -> ImageRejectedError:
    return ImageRejectedError(message, code="forbidden_path")


def _percent_decode_once(path: str) -> str:
    """One round of percent-decoding only: ``%2e%2e`` is ``..``; ``%252e`` is the name ``%2e``."""
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        raise forbidden_path(f"{path!r} is not valid UTF-8 once percent-decoded") from None
    if "\x00" in decoded:
        raise forbidden_path("the path contains a NUL byte")
    if not decoded.strip():
        raise forbidden_path("the path is empty")
    return decoded


def _real_roots(settings: ImageInputSettings) -> list[str]:
    return [os.path.realpath(root) for root in settings.allowed_roots]


def _within_any(real: str, roots: list[str]) -> bool:
    return any(os.path.commonpath([real, root]) == root for root in roots)


def read_allowed_file(path: str, settings: ImageInputSettings) -> bytes:
    resolved = resolve_allowed_path(path, settings)
    return read_regular_file(str(resolved), settings, roots=_real_roots(settings), shown=path)


def read_regular_file(
    path: str, settings: ImageInputSettings, *, roots: list[str] | None, shown: str
) -> bytes:
    """Read a whole regular file within the byte cap, checking its size before reading.

    With ``roots``, the final component may not be a symlink and the file actually opened must
    still be inside a root: a swap between ``resolve_allowed_path`` and ``open`` is caught.
    """
    fd = _open_file(path, roots is not None, shown)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageRejectedError(f"{shown!r} is not a regular file", code="not_found")
        if roots is not None and not _opened_within(fd, roots):
            raise forbidden_path(f"{shown!r} is outside the folders this server may read")
        _check_file_size(info.st_size, settings, shown)
        return _read_exactly(fd, info.st_size, shown)
    finally:
        os.close(fd)


def _read_exactly(fd: int, size: int, shown: str) -> bytes:
    """``size`` bytes and then end of file; usually one ``read`` and no copy."""
    chunks = []
    remaining = size
    while remaining > 0 and (chunk := os.read(fd, remaining)):
        chunks.append(chunk)
        remaining -= len(chunk)
    if remaining or os.read(fd, 1):
        raise ImageRejectedError(f"{shown!r} changed while it was being read", code="corrupt")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _open_file(path: str, no_follow: bool, shown: str) -> int:
    # O_NONBLOCK: opening a FIFO must not hang; regular files ignore it.
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if no_follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(path, flags)
    except ValueError:  # a NUL byte: client paths are refused earlier, a CLI argument is not
        raise ImageRejectedError(
            f"there is no image file at {shown!r} (a file name cannot hold a NUL byte)",
            code="not_found",
        ) from None
    except (FileNotFoundError, NotADirectoryError):
        raise ImageRejectedError(f"there is no image file at {shown!r}", code="not_found") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and no_follow:
            raise forbidden_path(f"{shown!r} became a symbolic link while being opened") from None
        if exc.errno == errno.ELOOP:
            raise ImageRejectedError(
                f"{shown!r} is a symbolic link that leads back to itself", code="not_found"
            ) from None
        reason = exc.strerror or type(exc).__name__
        raise ImageRejectedError(f"{shown!r} cannot be read ({reason})", code="not_found") from None


def _opened_within(fd: int, roots: list[str]) -> bool:
    try:
        actual = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return True  # no /proc: realpath + O_NOFOLLOW is the check we have
    return actual.startswith("/") and _within_any(actual, roots)


def _check_file_size(size: int, settings: ImageInputSettings, shown: str) -> None:
    if size == 0:
        raise ImageRejectedError(f"{shown!r} is empty (0 bytes)", code="empty")
    if size > settings.max_bytes:
        raise ImageRejectedError(
            f"{shown!r} is {format_bytes(size)}; the limit is {format_bytes(settings.max_bytes)}",
            code="too_large",
        )
