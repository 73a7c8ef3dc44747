"""How many pixels this process decodes at once, across every request and worker thread.

The pixel cap bounds one image; it does not bound forty requests each decoding a few-KB PNG at
the cap (~475 MB of peak memory apiece while decoding and converting). Each decode holds its
header's pixel count from a shared budget and waits while the budget is spent; an image larger
than the whole budget waits until it can run alone, so every image within the cap still decodes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class PixelBudget:
    """A weighted semaphore over pixels being decoded."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._held = 0
        self.peak = 0  # the most pixels ever held at once (tests read it)

    @property
    def held(self) -> int:
        with self._changed:
            return self._held

    @contextmanager
    def hold(self, pixels: int, limit: int) -> Iterator[None]:
        """Blocks until ``pixels`` (at most ``limit``) fit beside what others hold."""
        want = max(1, min(pixels, limit))
        with self._changed:
            self._changed.wait_for(lambda: self._held == 0 or self._held + want <= limit)
            self._held += want
            self.peak = max(self.peak, self._held)
        try:
            yield
        finally:
            with self._changed:
                self._held -= want
                self._changed.notify_all()


# One per process: the memory it guards is the process's.
DECODING = PixelBudget()
