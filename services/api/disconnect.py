"""A client that closes a Server-Sent Events stream early is normal, not a server error.

FastAPI 0.165 runs an SSE route's keep-alive as a task that forwards each event into the
response's stream. When the client leaves, the request's exit stack closes that stream; if the
task was inside a send at that moment, its task group raises ``anyio.BrokenResourceError`` (in an
``ExceptionGroup``) after the whole response was handled, and the server logs it as "Exception in
ASGI application" with a traceback (fastapi discussion #15725; not fixed upstream as of 0.165).
This middleware drops exactly that case: on a stream route, after the response started, a group
made only of closed- or broken-stream errors."""

from __future__ import annotations

import logging

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError)


class ClientGoneFromStream:
    def __init__(self, app: ASGIApp, *, path: str) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)  # the cached /ask path pays nothing
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except BaseExceptionGroup as group:
            _, rest = group.split(_GONE)
            if not started or rest is not None:
                raise
            log.debug("a client left %s before its stream ended", self.path)
