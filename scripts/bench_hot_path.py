"""Hot-path benchmark: what an exact repeat served from cache costs.

Measures, in one run and in one process (ASGI in-process: server-side time, no network):
  * Redis round trips per /ask that is an exact repeat (goal <= 2);
  * p50 of /ask exact repeats vs a bare FastAPI route on the same app doing one Redis GET,
    requests interleaved so machine noise hits both alike (goal <= 1.5x);
  * cold (all layers miss, local LLM) vs warm (all layers hit) /ask latency.

Usage: python scripts/bench_hot_path.py [--repeats 300] [--questions 8]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from rag.settings import Settings
from rag.wiring import Services
from services.app import create_app

QUESTIONS = [
    "How long are LLM answers cached?",
    "What happens when a client disconnects during a stream?",
    "What does the no-store mode do?",
    "How are search results invalidated when a document changes?",
    "What is in the key of the generation cache?",
    "How big are the chunks documents are split into?",
    "What happens when Redis is down?",
    "How is a cached answer replayed?",
    "Which model computes the embeddings?",
    "What does the stats endpoint show?",
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


Ask = Callable[[str], Awaitable[tuple[float, dict[str, Any]]]]


async def cold_and_warm(ask: Ask, questions: int) -> tuple[list[float], list[float]]:
    """Each question twice: first with every layer missing (the local LLM runs), then hitting."""
    cold, warm = [], []
    for q in QUESTIONS[:questions]:
        ms, body = await ask(q)
        assert body["cache"]["llm"] == "miss", body["cache"]
        cold.append(ms)
        ms, body = await ask(q)
        assert body["cache"] == {"embedding": "hit", "search": "hit", "llm": "hit"}, body["cache"]
        warm.append(ms)
    return cold, warm


async def interleaved(
    client: httpx.AsyncClient, ask: Ask, store: Any, repeats: int
) -> tuple[list[float], list[float], float]:
    """An exact repeat and the bare route, alternately: their latencies, and the Redis round
    trips per repeat."""
    q = QUESTIONS[0]
    for _ in range(20):  # warm-up of both paths
        await ask(q)
        await client.get("/bench/one-redis-get")
    trips_before = store.round_trips
    ask_ms, bare_ms = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        r = await client.post("/ask", json={"query": q})
        ask_ms.append((time.perf_counter() - started) * 1000)
        assert r.json()["cache"]["llm"] == "hit"
        started = time.perf_counter()
        await client.get("/bench/one-redis-get")
        bare_ms.append((time.perf_counter() - started) * 1000)
    return ask_ms, bare_ms, (store.round_trips - trips_before) / repeats


def report(
    trips: float, ask_ms: list[float], bare_ms: list[float], cold: list[float], warm: list[float]
) -> None:
    p50_ask, p50_bare = statistics.median(ask_ms), statistics.median(bare_ms)
    print(f"exact repeat /ask: {trips:.2f} Redis round trips per request (goal <= 2)")
    print(
        f"server-side p50: /ask hit {p50_ask:.2f} ms, "
        f"bare route with one Redis GET {p50_bare:.2f} ms "
        f"-> ratio {p50_ask / p50_bare:.2f}x (goal <= 1.5x); p99 {pct(ask_ms, 0.99):.2f} vs "
        f"{pct(bare_ms, 0.99):.2f} ms; n={len(ask_ms)}"
    )
    print(
        f"cold vs warm /ask with the local LLM: p50 {statistics.median(cold):.0f} ms vs "
        f"{statistics.median(warm):.2f} ms -> "
        f"{statistics.median(cold) / statistics.median(warm):.0f}x "
        f"faster warm; n={len(cold)} questions"
    )


async def main(repeats: int, questions: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    settings = Settings(data_dir=data_dir, namespace=f"bench-{uuid.uuid4().hex[:8]}")
    app = create_app(settings)

    @app.get("/bench/one-redis-get")
    async def one_redis_get() -> dict[str, bool]:
        services: Services = app.state.services
        (found,) = await services.corpus.redis.get_many(["rag:bench:missing"])
        return {"found": found is not None}

    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

            async def ask(q: str) -> tuple[float, dict[str, Any]]:
                started = time.perf_counter()
                r = await client.post("/ask", json={"query": q})
                elapsed = (time.perf_counter() - started) * 1000
                r.raise_for_status()
                return elapsed, r.json()

            cold, warm = await cold_and_warm(ask, questions)
            ask_ms, bare_ms, trips = await interleaved(client, ask, services.corpus.redis, repeats)
    report(trips, ask_ms, bare_ms, cold, warm)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--questions", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.repeats, min(args.questions, len(QUESTIONS))))
