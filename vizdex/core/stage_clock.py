"""Wall-clock seconds per pipeline stage, summed over a run: where an ingest spends its time.

A stage's seconds include waiting (for the device, a lock or a queue), which is the point: the
stage with the most seconds on the thread that paces the pipeline is the one to work on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageClock:
    """Thread-safe sums of ``with clock.stage(name):`` blocks."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self._seconds[name] = self._seconds.get(name, 0.0) + elapsed

    def seconds(self) -> dict[str, float]:
        with self._lock:
            return dict(self._seconds)

    def summary(self) -> str:
        """``name 1.23 s, other 0.45 s``, largest first."""
        ranked = sorted(self.seconds().items(), key=lambda entry: -entry[1])
        return ", ".join(f"{name} {value:.2f} s" for name, value in ranked)
