"""ASGI middleware: cancel a request's queued model work when its client disconnects.

The middleware keeps reading the connection after the body; ``http.disconnect`` before the
response is done cancels the request's ticket (``vizdex.encoders.cancellation``).
"""

from __future__ import annotations

import asyncio

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from vizdex.encoders.cancellation import close_ticket, open_ticket

_DISCONNECT: ReceiveMessage = {"type": "http.disconnect"}


def disconnect_middleware(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: a ticket per HTTP request, cancelled on ``http.disconnect``."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        ticket, token = open_ticket()
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
            close_ticket(token)

    return middleware
