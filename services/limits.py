"""Request body size limit, as plain ASGI middleware (cheap on the cached path).

A declared ``Content-Length`` over the limit is refused before anything is read (one within it
passes untouched: the server reads no more than it declares); a body sent without one (chunked)
is counted as it arrives and refused once it passes the limit."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _TooLarge(HTTPException):
    """Raised while the app reads the body; FastAPI passes HTTP exceptions through its body
    parsing (anything else there becomes a vague 400), and the app's handler answers 413."""


class BodySizeLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None:
            if not declared.isdigit():
                await _reply(send, 400, "Content-Length must be a number of bytes")
                return
            if int(declared) > self.max_bytes:
                await self._refuse(send)
                return
            # The server reads exactly the declared length (HTTP framing): nothing to count.
            await self.app(scope, receive, send)
            return

        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(413, f"request body is larger than {self.max_bytes} bytes")
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:  # read outside the app's exception handling
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        await _reply(send, 413, f"request body is larger than {self.max_bytes} bytes")


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
