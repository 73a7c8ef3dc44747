"""Micro-batching: items from concurrent requests share one model call, through a bounded queue.

One :class:`MicroBatcher` per model and input kind. Each submitted item gets its own future; one
worker thread takes up to ``max_batch`` items, waiting at most ``max_wait_s`` after the oldest
one arrived for others to join, and calls ``run`` once for all of them. An item that finds the
worker idle for at least ``max_wait_s`` runs at once: nobody has been sending, so the wait would
only add latency to a lone query (and batches still form from what queues during a call). A
full queue refuses new items at once (:class:`QueueFullError`, a 429 with ``Retry-After``), so
memory stays bounded. An item whose future was cancelled before the worker took it (its client
went away) is skipped.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from vizdex.core.errors import UnavailableError, VizdexError

T = TypeVar("T")
R = TypeVar("R")


class QueueFullError(UnavailableError):
    """Too much work is already queued for this model; retry after ``retry_after`` seconds."""

    code = "overloaded"

    @property
    def retry_after(self) -> int:
        return int(self.details.get("retry_after", 1))


class RequestCancelledError(VizdexError):
    """The client went away; its queued work was dropped. Nobody reads the response."""

    code = "client_disconnected"


class BatchObserver(Protocol):
    def batch_done(self, size: int, seconds: float) -> None: ...
    def rejected(self, count: int) -> None: ...
    def skipped(self, count: int) -> None: ...


class Clock(Protocol):
    """Where a batcher reads the time and waits: the system's, or one a test steps by hand."""

    def now(self) -> float: ...

    def sleep_on(self, cond: threading.Condition, timeout: float) -> None:
        """Wait on ``cond`` (held by the caller) until notified or ``timeout`` seconds pass."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def sleep_on(self, cond: threading.Condition, timeout: float) -> None:
        cond.wait(timeout)


class _NoObserver:
    def batch_done(self, size: int, seconds: float) -> None:
        pass

    def rejected(self, count: int) -> None:
        pass

    def skipped(self, count: int) -> None:
        pass


@dataclass
class _Entry(Generic[T, R]):
    value: T
    future: Future[R]
    enqueued: float


class MicroBatcher(Generic[T, R]):
    """A bounded queue with one worker thread that calls ``run`` on batches of items.

    ``run`` gets a list of items and returns one result per item, in order; if it raises, every
    item of that batch fails with the same exception.
    """

    def __init__(
        self,
        name: str,
        run: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int,
        max_wait_s: float,
        capacity: int,
        observer: BatchObserver | None = None,
        clock: Clock | None = None,
    ) -> None:
        if max_batch < 1 or capacity < max_batch:
            raise ValueError("need 1 <= max_batch <= capacity")
        self.name = name
        self.max_batch = max_batch
        self.capacity = capacity
        self._run = run
        self._max_wait_s = max(0.0, max_wait_s)
        self._observer: BatchObserver = observer or _NoObserver()
        self._clock: Clock = clock or SystemClock()
        self._queue: deque[_Entry[T, R]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._batch_seconds = 0.05  # running estimate, for Retry-After
        self._idle_since = self._clock.now()  # when the worker last finished a batch
        self._thread = threading.Thread(target=self._loop, name=f"vizdex-batch-{name}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Items waiting (cancelled ones included until the worker or a submit drops them)."""
        return len(self._queue)

    def submit(self, values: Sequence[T], *, wait_s: float = 0.0) -> list[Future[R]]:
        """Queue ``values`` (all or none); ``wait_s`` > 0 waits that long for room first."""
        count = len(values)
        if count > self.capacity:
            raise ValueError(f"{count} items can never fit a queue of {self.capacity}")
        deadline = self._clock.now() + wait_s
        with self._cond:
            while True:
                if self._closed:
                    raise UnavailableError("the service is shutting down", code="shutting_down")
                if len(self._queue) + count > self.capacity:
                    self._drop_cancelled()
                if len(self._queue) + count <= self.capacity:
                    break
                remaining = deadline - self._clock.now()
                if remaining <= 0:
                    self._observer.rejected(count)
                    retry = self._retry_after()
                    raise QueueFullError(
                        f"the server is busy ({len(self._queue)} items queued for "
                        f"{self.name}); retry in {retry} s",
                        retry_after=retry,
                    )
                self._clock.sleep_on(self._cond, remaining)
            now = self._clock.now()
            futures: list[Future[R]] = []
            for value in values:
                future: Future[R] = Future()
                self._queue.append(_Entry(value, future, now))
                futures.append(future)
            self._cond.notify_all()
        return futures

    def close(self, timeout: float | None = None) -> None:
        """Stop taking items; the worker finishes what is queued, then exits."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # -- worker --------------------------------------------------------------------------------

    def _retry_after(self) -> int:
        batches_ahead = len(self._queue) / self.max_batch + 1
        return max(1, math.ceil(batches_ahead * self._batch_seconds))

    def _drop_cancelled(self) -> None:
        live = deque(entry for entry in self._queue if not entry.future.cancelled())
        dropped = len(self._queue) - len(live)
        if dropped:
            self._queue = live
            self._observer.skipped(dropped)

    def _take(self) -> list[_Entry[T, R]] | None:
        with self._cond:
            while True:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return None  # closed and drained
                # Give others until the oldest item's deadline to join, unless the batch is full
                # or the oldest arrived at a worker idle for a whole wait (no traffic to join it).
                oldest = self._queue[0].enqueued
                quiet = oldest - self._idle_since >= self._max_wait_s
                deadline = oldest if quiet else oldest + self._max_wait_s
                while len(self._queue) < self.max_batch and not self._closed:
                    remaining = deadline - self._clock.now()
                    if remaining <= 0:
                        break
                    self._clock.sleep_on(self._cond, remaining)
                taken: list[_Entry[T, R]] = []
                skipped = 0
                while self._queue and len(taken) < self.max_batch:
                    entry = self._queue.popleft()
                    # False when the future was cancelled: its client is gone, skip the work.
                    if entry.future.set_running_or_notify_cancel():
                        taken.append(entry)
                    else:
                        skipped += 1
                if skipped:
                    self._observer.skipped(skipped)
                self._cond.notify_all()  # room for submitters waiting on a full queue
                if taken:
                    return taken

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            self._execute(batch)
            with self._cond:
                self._idle_since = self._clock.now()

    def _execute(self, batch: list[_Entry[T, R]]) -> None:
        started = time.perf_counter()
        try:
            results = self._run([entry.value for entry in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} items")
        except BaseException as error:  # every waiter must hear about it, whatever it is
            for entry in batch:
                entry.future.set_exception(error)
            return
        seconds = time.perf_counter() - started
        self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * seconds
        self._observer.batch_done(len(batch), seconds)
        for entry, result in zip(batch, results, strict=True):
            entry.future.set_result(result)
