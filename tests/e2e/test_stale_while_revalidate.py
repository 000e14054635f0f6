"""Stale-while-revalidate and sliding TTL through HTTP on real parts (scripted LLM): a stale
entry is served at once and refreshed exactly once in the background; reading an embedding
extends its TTL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from rag.cache.layers import EmbeddingLayer
from rag.embedding import SentenceTransformerEmbedder
from rag.settings import Settings
from tests.conftest import serve_scripted
from tests.scripted_llm import ScriptedLLM


@pytest.fixture(scope="module")
def swr_app(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder, valkey_url: str
) -> Iterator[tuple[str, Settings, ScriptedLLM]]:
    with serve_scripted(
        tmp_path_factory,
        embedder,
        valkey_url,
        "swr",
        search_soft_ttl_s=1,
        llm_soft_ttl_s=1,
        xfetch_beta=0.0,  # deterministic: stale exactly at the soft TTL
    ) as running:
        yield running.url, running.settings, running.llm


def upstream(url: str) -> dict[str, float]:
    return httpx.get(f"{url}/stats").json()["upstream_calls"]  # type: ignore[no-any-return]


def test_stale_entries_are_served_at_once_and_refreshed_exactly_once(
    swr_app: tuple[str, Settings, ScriptedLLM],
) -> None:
    url, _, llm = swr_app
    body = {"query": "How does stale-while-revalidate work?"}
    first = httpx.post(f"{url}/ask", json=body, timeout=60).json()
    assert first["cache"]["llm"] == "miss"
    before, llm_before = upstream(url), llm.calls
    time.sleep(1.2)  # past both soft TTLs, far from the hard ones

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(client.post(f"{url}/ask", json=body) for _ in range(10)))

    stale = asyncio.run(burst())
    assert all(
        r.json()["cache"] == {"embedding": "hit", "search": "hit", "llm": "hit"} for r in stale
    )
    assert all(r.json()["answer"] == first["answer"] for r in stale)

    deadline = time.monotonic() + 10
    while llm.calls == llm_before and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # time for any (wrong) second refresh to show up
    after = upstream(url)
    assert llm.calls - llm_before == 1, "the stale answer was not refreshed exactly once"
    assert after["llm"] - before["llm"] == 1 and after["search"] - before["search"] == 1

    fresh = httpx.post(f"{url}/ask", json=body, timeout=60).json()
    assert fresh["cache"]["llm"] == "hit"
    assert llm.calls - llm_before == 1  # fresh again: no further refresh


def test_reading_an_embedding_extends_its_ttl(swr_app: tuple[str, Settings, ScriptedLLM]) -> None:
    url, settings, _ = swr_app
    body = {"query": "Does reading an embedding keep it alive?"}
    httpx.post(f"{url}/ask", json=body, timeout=60)
    key = EmbeddingLayer(  # the embedding layer's key for the query, as the app builds it
        namespace=settings.namespace,
        model_id=settings.embedding_model_id,
        dimension=384,
        ttl_s=settings.embedding_ttl_s,
    ).key(body["query"])
    client = redis.Redis.from_url(settings.redis_url)
    assert client.expire(key, 50)  # fails if the key above is not the one the app wrote
    assert httpx.post(f"{url}/ask", json=body, timeout=60).json()["cache"]["embedding"] == "hit"
    deadline = time.monotonic() + 5
    while client.ttl(key) <= 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.ttl(key) > settings.embedding_ttl_s - 60
