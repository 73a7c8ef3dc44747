"""Drop a caller's queued model work when the caller goes away.

A caller (an HTTP request, in ``vizdex.web.cancellation``) holds a :class:`RequestTicket` in a
context variable, which ``anyio`` copies into the worker threads that run sync handlers. Encoders
register the futures of queued items on it; cancelling the ticket cancels them, and the batcher
skips them.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from contextvars import ContextVar, Token
from typing import Any

from vizdex.encoders.batching import RequestCancelledError

_current: ContextVar[RequestTicket | None] = ContextVar("vizdex_request_ticket", default=None)
_PRUNE_AT = 1024


class RequestTicket:
    """The futures one request is waiting on, cancelled together if the client goes away."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: list[Future[Any]] = []
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def track(self, futures: list[Future[Any]]) -> None:
        with self._lock:
            if not self._cancelled:
                if len(self._futures) > _PRUNE_AT:
                    self._futures = [future for future in self._futures if not future.done()]
                self._futures.extend(futures)
                return
        for future in futures:
            future.cancel()
        raise RequestCancelledError("the client disconnected")

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            futures, self._futures = self._futures, []
        for future in futures:
            future.cancel()


def current_ticket() -> RequestTicket | None:
    return _current.get()


def track(futures: list[Future[Any]]) -> None:
    """Tie ``futures`` to the current request (no-op outside one)."""
    ticket = _current.get()
    if ticket is not None:
        ticket.track(futures)


def open_ticket() -> tuple[RequestTicket, Token[RequestTicket | None]]:
    """A fresh ticket for the current context; hand the token to :func:`close_ticket`."""
    ticket = RequestTicket()
    return ticket, _current.set(ticket)


def close_ticket(token: Token[RequestTicket | None]) -> None:
    _current.reset(token)
