"""How the app is served by uvicorn: ``config`` (what ``rag serve`` and the tests share), and
``serve_in_thread``: a real server in a background thread on a free loopback port, what the
tests and the in-process benchmark do instead of ``rag serve``."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


class JSONErrorHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering a request it cannot parse (an over-long request
    line, a malformed header) as the app answers every error: JSON ``{"detail": …}``, not
    uvicorn's plain text. The connection still closes: the byte stream cannot be trusted."""

    def send_400_response(self, msg: str) -> None:
        body = json.dumps({"detail": msg}).encode()
        head = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body)]
        self.transport.write(b"".join([*head, b"connection: close\r\n\r\n", body]))
        self.transport.close()


def config(app: FastAPI, *, host: str, port: int, **options: Any) -> uvicorn.Config:
    """The server's settings, the same for ``rag serve`` and the tests."""
    return uvicorn.Config(app, host=host, port=port, http=JSONErrorHttpToolsProtocol, **options)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_in_thread(app: FastAPI, *, start_timeout_s: float = 120) -> Iterator[str]:
    """Run ``app`` (lifespan included) until the block ends; yield its base URL."""
    port = free_port()
    server = uvicorn.Server(config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="app-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the app did not start (see the log above)")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
