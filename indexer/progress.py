"""Progress of an ingestion: plain snapshots, and a text bar for terminals and logs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO


@dataclass(frozen=True)
class ProgressSnapshot:
    total: int
    indexed: int  # newly embedded, plus moved or updated in place
    skipped: int  # unchanged or duplicate
    failed: int
    elapsed_s: float

    @property
    def processed(self) -> int:
        return self.indexed + self.skipped + self.failed

    @property
    def rate(self) -> float:
        """Items per second so far."""
        return self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        remaining = self.total - self.processed
        if remaining <= 0:
            return 0.0
        return remaining / self.rate if self.rate > 0 else None


ProgressCallback = Callable[[ProgressSnapshot], None]


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def render(snapshot: ProgressSnapshot, *, width: int = 24) -> str:
    """``[#########---------]  1,234/5,000  24%  38.2 img/s  ETA 1m39s  (12 skipped, 3 failed)``"""
    total = max(snapshot.total, snapshot.processed)
    fraction = snapshot.processed / total if total else 1.0
    filled = min(width, int(fraction * width))
    bar = "#" * filled + "-" * (width - filled)
    line = (
        f"[{bar}] {snapshot.processed:,}/{total:,} {fraction:4.0%}  {snapshot.rate:6.1f} img/s"
        f"  ETA {format_duration(snapshot.eta_s)}"
    )
    extras = []
    if snapshot.skipped:
        extras.append(f"{snapshot.skipped:,} skipped")
    if snapshot.failed:
        extras.append(f"{snapshot.failed:,} failed")
    return line + (f"  ({', '.join(extras)})" if extras else "")


class TextProgress:
    """A progress bar on a text stream.

    On a terminal the line is redrawn in place (carriage return) at most ``interval_s`` apart; in a
    log file (not a TTY) a full line is written every ``interval_s`` (default 10 s) instead.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        tty: bool | None = None,
        interval_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._interval = interval_s if interval_s is not None else (0.2 if self._tty else 10.0)
        self._clock = clock
        self._last: float | None = None
        self._width = 0

    def __call__(self, snapshot: ProgressSnapshot) -> None:
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            return
        self._last = now
        self._write(render(snapshot))

    def finish(self, snapshot: ProgressSnapshot) -> None:
        """The final state, always written, ending the line."""
        self._write(render(snapshot))
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()

    def abort(self) -> None:
        """End a bar left half-drawn by an error, so the error message starts a new line."""
        if self._tty and self._last is not None:
            self._stream.write("\n")
            self._stream.flush()

    def _write(self, line: str) -> None:
        if self._tty:
            padding = " " * max(0, self._width - len(line))
            self._width = len(line)
            self._stream.write(f"\r{line}{padding}")
        else:
            self._stream.write(line + "\n")
        self._stream.flush()
