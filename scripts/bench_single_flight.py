"""Stampede benchmark: N concurrent identical cold /ask requests, single-flight on vs off.

Both apps run in this process on the same embedded Valkey and the same local LLM (SmolLM2 on
llama.cpp), each in a fresh namespace so every run starts cold; the requests go through the
real HTTP stack (in-process ASGI). Prints upstream calls per stage and client-side latency
p50/p99 for each setting.

Usage: python scripts/bench_single_flight.py [--concurrency 100] [--max-tokens 24]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from rag.embedding import SentenceTransformerEmbedder, default_model_path
from rag.local import embedded_valkey, local_llm_server
from rag.settings import Settings
from services.app import create_app

QUESTION = "What happens when many clients ask the same question at the same moment?"


async def stampede(settings: Settings, embedder: SentenceTransformerEmbedder, n: int) -> str:
    app = create_app(settings, embedder=embedder)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://b", timeout=600) as c:

            async def one() -> float:
                started = time.perf_counter()
                r = await c.post("/ask", json={"query": QUESTION})
                r.raise_for_status()
                return (time.perf_counter() - started) * 1000

            latencies = sorted(await asyncio.gather(*(one() for _ in range(n))))
            calls = (await c.get("/stats")).json()["upstream_calls"]
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return (
        f"llm {calls['llm']:>4.0f}  embedding {calls['embedding']:>4.0f}  "
        f"search {calls['search']:>4.0f}  p50 {statistics.median(latencies):>8.0f} ms  "
        f"p99 {p99:>8.0f} ms"
    )


async def main(n: int, max_tokens: int) -> None:
    embedder = SentenceTransformerEmbedder(
        model_path=default_model_path(), model_id="all-MiniLM-L6-v2", batch_size=64
    )
    with embedded_valkey() as redis_url, local_llm_server(threads=2) as llm_url:
        print(f"{n} concurrent identical cold /ask requests (local SmolLM2, {max_tokens} tokens):")
        for single_flight in (True, False):
            settings = Settings(
                namespace=f"stampede-{uuid.uuid4().hex[:8]}",
                data_dir=Path(tempfile.mkdtemp(prefix="stampede-")),
                redis_url=redis_url,
                llm_base_url=llm_url,
                llm_max_tokens=max_tokens,
                single_flight=single_flight,
            )
            result = await stampede(settings, embedder, n)
            print(f"  single-flight {'on ' if single_flight else 'off'}: {result}")
    embedder.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=24)
    args = parser.parse_args()
    asyncio.run(main(args.concurrency, args.max_tokens))
