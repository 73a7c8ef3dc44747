"""Drop a request's queued model work when its client disconnects.

Each HTTP request gets a :class:`RequestTicket` in a context variable (which ``anyio`` copies into
the worker threads that run sync handlers). Encoders register the futures of queued items on it.
The ASGI middleware below keeps reading the connection after the body; ``http.disconnect``
before the response is done cancels those futures, and the batcher skips them.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from contextvars import ContextVar
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from web.batching import RequestCancelledError

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


_DISCONNECT: ReceiveMessage = {"type": "http.disconnect"}


def disconnect_middleware(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: a ticket per HTTP request, cancelled on ``http.disconnect``."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        ticket = RequestTicket()
        token = _current.set(ticket)
        # An unbuffered hand-off: the pump never reads ahead of the app, so bodies stay streamed.
        inbox: asyncio.Queue[ReceiveMessage] = asyncio.Queue(maxsize=1)

        async def pump() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    ticket.cancel()
                    while True:  # anyone who asks again learns the same
                        await inbox.put(_DISCONNECT)
                await inbox.put(message)

        async def relayed_receive() -> ReceiveMessage:
            return await inbox.get()

        pump_task = asyncio.ensure_future(pump())
        try:
            await app(scope, relayed_receive, send)
        finally:
            pump_task.cancel()
            _current.reset(token)

    return middleware
