"""A cached ``POST /ask`` in-process, at the ASGI level (no socket, no HTTP server): the time one
hit costs the app itself, and where it goes (cProfile).

    python scripts/profile_hit_path.py [--requests 3000] [--profile] [--sort tottime]

Builds the app with the settings of the environment (``RAG_REDIS_URL`` defaults to the machine's
127.0.0.1:6379 here, under a fresh namespace), asks one question once so it is cached, then calls
the app directly with the same request, one at a time. Over real HTTP, see
``scripts/bench_http_hits.py``."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import tempfile
import time
import uuid

from starlette.types import Message

BODY = json.dumps({"query": "How long are LLM answers cached?"}).encode()
SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/ask",
    "raw_path": b"/ask",
    "query_string": b"",
    "root_path": "",
    "headers": [
        (b"host", b"bench"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ],
    "client": ("127.0.0.1", 1),
    "server": ("127.0.0.1", 2),
}


async def call(app: object) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(dict(SCOPE), receive, send)  # type: ignore[operator]
    return sent


async def run(args: argparse.Namespace) -> None:
    from rag.settings import Settings
    from services.app import create_app

    app = create_app(Settings())
    async with app.router.lifespan_context(app):
        first = await call(app)
        assert first[0]["status"] == 200, first
        for _ in range(500):  # warm: the answer is cached, the memos are filled
            await call(app)
        started = time.perf_counter()
        for _ in range(args.requests):
            await call(app)
        per_request_us = (time.perf_counter() - started) / args.requests * 1e6
        print(f"cached /ask in-process: {per_request_us:.0f} us per request")
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(args.requests):
                await call(app)
            profile.disable()
            pstats.Stats(profile).sort_stats(args.sort).print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--profile", action="store_true", help="also print cProfile's top 40")
    parser.add_argument("--sort", default="cumulative", help="cProfile sort key")
    args = parser.parse_args()
    os.environ.setdefault("RAG_REDIS_URL", "redis://127.0.0.1:6379/0")
    os.environ.setdefault("RAG_NAMESPACE", f"profile-{uuid.uuid4().hex[:8]}")
    os.environ.setdefault("RAG_DATA_DIR", tempfile.mkdtemp(prefix="rag-profile-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
