"""Holding a back-fill to its share of the device (``VIZDEX_BACKFILL_SHARE``), so that queries
served beside it keep their latency.

After each batch that kept the device busy ``t`` seconds the back-fill rests
``t * (1 - share) / share``: over any run of batches busy / (busy + rest) is ``share``. The rest
is a wait on the job's cancel event, so a cancelled back-fill stops resting at once. The clock
and the wait are parameters so the accounting can be checked without timing anything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Clock = Callable[[], float]
Rest = Callable[[threading.Event, float], None]


def rest_unless_cancelled(cancel: threading.Event, seconds: float) -> None:
    cancel.wait(seconds)


class Throttle:
    def __init__(
        self, share: float, *, clock: Clock = time.monotonic, rest: Rest = rest_unless_cancelled
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"a share is more than 0 and at most 1, got {share}")
        self.share = share
        self._clock = clock
        self._rest = rest
        self.busy_s = 0.0  # time spent in batches
        self.rested_s = 0.0  # time given back to queries
        self.batches = 0

    @contextmanager
    def batch(self, cancel: threading.Event) -> Iterator[None]:
        """Times one batch, then rests for the share's part of it (unless cancelled)."""
        started = self._clock()
        yield
        busy = max(0.0, self._clock() - started)
        self.busy_s += busy
        self.batches += 1
        if self.share < 1.0 and not cancel.is_set():
            pause = busy * (1.0 - self.share) / self.share
            self.rested_s += pause
            self._rest(cancel, pause)
