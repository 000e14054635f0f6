"""The semantic cache on real parts: embedded Valkey, the real MiniLM vectors and the shipped
rule. Library-level tests for scope, threshold, expiry and cross-process sync; HTTP tests with a
scripted LLM. (The trap set and ``rag semantic …``: ``test_semantic_commands.py``.)"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis.asyncio as aioredis

from rag.cache.aside import Background, CachedLayer
from rag.cache.gateway import RedisGateway
from rag.cache.layers import AnswerLayer
from rag.cache.layers.base import Freshness
from rag.embedding import SentenceTransformerEmbedder
from rag.local import embedded_valkey
from rag.metrics import Metrics
from rag.semantic.cache import SemanticCache
from rag.semantic.index import SemanticIndex
from rag.semantic.rule import SemanticRule
from rag.settings import Settings
from rag.types import Completion, Usage
from tests.conftest import serve_scripted
from tests.paths import ROOT
from tests.scripted_llm import ScriptedLLM
from tests.sse import parse

SCOPE = {"embedding": "all-MiniLM-L6-v2", "llm": "m", "prompt": "p1", "sampling": {"t": 0}}
QUESTION, PARAPHRASE, TRAP = (
    "How do I reset my password?",
    "How can I reset my password?",
    "How do I not reset my password?",
)


def live_rule() -> SemanticRule:
    return SemanticRule.from_settings(Settings())


@pytest.fixture
async def client(valkey_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(valkey_url)
    yield redis
    await redis.aclose()


# the exact answer layer the semantic cache points into
Answers = CachedLayer[AnswerLayer, Completion]
SemanticFactory = Callable[..., tuple[SemanticCache, Answers]]


def semantic_cache(
    redis: aioredis.Redis, ns: str, ttl_s: int = 60, max_entries: int = 1000, **scope: Any
) -> tuple[SemanticCache, Answers]:
    """A semantic cache and the answer layer it serves from, built as the app builds them;
    ``scope`` overrides parts of ``SCOPE``."""
    parts = {**SCOPE, **scope}
    gateway = RedisGateway(client=redis, timeout_s=1.0)
    spec = AnswerLayer(
        namespace=ns,
        llm_model=parts["llm"],
        prompt_version=parts["prompt"],
        sampling=parts["sampling"],
        ttl_s=ttl_s,
        freshness=Freshness(soft_ttl_s=ttl_s),  # never stale
    )
    answers: Answers = CachedLayer(
        spec=spec, store=gateway, metrics=Metrics(), background=Background()
    )
    cache = SemanticCache(
        redis=gateway,
        rule=live_rule(),
        index=SemanticIndex(dimension=384, max_entries=max_entries),
        answers=spec,
        embedding_model_id=parts["embedding"],
    )
    return cache, answers


@pytest.fixture
def make_semantic(client: aioredis.Redis, namespace: str) -> SemanticFactory:
    def make(
        *, ns: str = namespace, ttl_s: int = 60, redis: aioredis.Redis = client, **scope: Any
    ) -> tuple[SemanticCache, Answers]:
        return semantic_cache(redis, ns, ttl_s, **scope)

    return make


@pytest.fixture(scope="module")
def vectors(embedder: SentenceTransformerEmbedder) -> dict[str, np.ndarray]:
    texts = [QUESTION, PARAPHRASE, TRAP]
    return dict(zip(texts, embedder.embed_sync(texts), strict=True))


async def remember(cache: SemanticCache, answers: Answers, scope: str, vector: np.ndarray) -> str:
    answer_key = answers.spec.key(QUESTION, [])
    completion = Completion(
        text="Use the reset link.",
        pieces=("Use", " the reset link."),
        usage=Usage(5, 3),
        finish_reason="stop",
        model="m",
    )
    await answers.write(answer_key, completion)
    await cache.add(scope=scope, query=QUESTION, vector=vector, answer_key=answer_key, sources=[])
    return answer_key


async def test_paraphrase_hits_and_trap_misses(
    make_semantic: SemanticFactory, vectors: dict
) -> None:  # type: ignore[type-arg]
    cache, answers = make_semantic()
    scope = cache.scope("v1")
    await remember(cache, answers, scope, vectors[QUESTION])
    match = await cache.lookup(scope=scope, query=PARAPHRASE, vector=vectors[PARAPHRASE])
    assert match is not None
    assert match.matched_query == QUESTION and match.completion.text == "Use the reset link."
    assert match.similarity >= cache.rule.threshold
    assert await cache.lookup(scope=scope, query=TRAP, vector=vectors[TRAP]) is None


@pytest.mark.parametrize(
    "changed",
    [
        {"ns": "another-tenant"},
        {"embedding": "bge-small"},
        {"llm": "gpt-4o-mini"},
        {"prompt": "p2"},
        {"sampling": {"t": 0.7}},
        {"corpus_version": "v2"},
    ],
    ids=lambda c: next(iter(c)),
)
async def test_no_hit_across_scopes(
    make_semantic: SemanticFactory,
    vectors: dict,
    namespace: str,
    changed: dict[str, Any],  # type: ignore[type-arg]
) -> None:
    writer, answers = make_semantic()
    await remember(writer, answers, writer.scope("v1"), vectors[QUESTION])
    changed = dict(changed)
    version = changed.pop("corpus_version", "v1")
    ns = changed.pop("ns", namespace)
    reader, _ = make_semantic(ns=ns, **changed)
    assert await reader.reload() == (0 if ns != namespace else 1)
    assert (
        await reader.lookup(scope=reader.scope(version), query=QUESTION, vector=vectors[QUESTION])
        is None
    )
    # the same reader with nothing changed would hit:
    same, _ = make_semantic()
    await same.reload()
    assert await same.lookup(scope=same.scope("v1"), query=QUESTION, vector=vectors[QUESTION])


async def test_per_request_threshold(make_semantic: SemanticFactory, vectors: dict) -> None:  # type: ignore[type-arg]
    cache, answers = make_semantic()
    scope = cache.scope("v1")
    await remember(cache, answers, scope, vectors[QUESTION])
    similarity = float(vectors[QUESTION] @ vectors[PARAPHRASE])
    strict = await cache.lookup(
        scope=scope, query=PARAPHRASE, vector=vectors[PARAPHRASE], threshold=similarity + 0.001
    )
    assert strict is None
    assert await cache.lookup(
        scope=scope, query=PARAPHRASE, vector=vectors[PARAPHRASE], threshold=similarity
    )


async def test_expired_entries_leave_the_index(
    make_semantic: SemanticFactory, vectors: dict, client: aioredis.Redis
) -> None:  # type: ignore[type-arg]
    cache, answers = make_semantic(ttl_s=1)
    scope = cache.scope("v1")
    await remember(cache, answers, scope, vectors[QUESTION])
    assert len(cache.index) == 1
    await asyncio.sleep(1.2)
    assert await cache.lookup(scope=scope, query=QUESTION, vector=vectors[QUESTION]) is None
    assert len(cache.index) == 0
    assert await cache.reload() == 0  # and Redis expired it too


async def test_a_vanished_answer_is_a_miss_and_drops_the_entry(
    make_semantic: SemanticFactory,
    vectors: dict,
    client: aioredis.Redis,  # type: ignore[type-arg]
) -> None:
    cache, answers = make_semantic()
    scope = cache.scope("v1")
    answer_key = await remember(cache, answers, scope, vectors[QUESTION])
    await client.delete(answer_key)
    assert await cache.lookup(scope=scope, query=PARAPHRASE, vector=vectors[PARAPHRASE]) is None
    assert len(cache.index) == 0 and await cache.reload() == 0


async def test_a_second_process_sees_a_new_entry(
    make_semantic: SemanticFactory,
    vectors: dict,
    valkey_url: str,
    namespace: str,
    tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    reader, _ = make_semantic()
    sync = asyncio.create_task(reader.run_sync(sweep_s=0.2))
    try:
        for _ in range(50):
            if reader.synced:
                break
            await asyncio.sleep(0.05)
        vector_file = tmp_path / "v.npy"
        np.save(vector_file, vectors[QUESTION])
        script = textwrap.dedent(
            f"""
            import asyncio, numpy as np, redis.asyncio as aioredis, sys
            sys.path.insert(0, {str(ROOT)!r})
            from tests.e2e.test_semantic_cache import remember, semantic_cache

            async def main():
                client = aioredis.Redis.from_url({valkey_url!r})
                cache, answers = semantic_cache(client, {namespace!r}, max_entries=10)
                vector = np.load({str(vector_file)!r})
                await remember(cache, answers, cache.scope("v1"), vector)
                await client.aclose()

            asyncio.run(main())
            """
        )
        subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
        deadline = time.monotonic() + 2
        while len(reader.index) == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(reader.index) == 1, "the other process's entry did not arrive within 2 s"
        match = await reader.lookup(
            scope=reader.scope("v1"), query=PARAPHRASE, vector=vectors[PARAPHRASE]
        )
        assert match is not None and match.matched_query == QUESTION
    finally:
        sync.cancel()
        await asyncio.gather(sync, return_exceptions=True)


# -- through HTTP -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_url(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder, valkey_url: str
) -> Iterator[tuple[str, Any, ScriptedLLM]]:
    with serve_scripted(tmp_path_factory, embedder, valkey_url, "sem") as running:
        yield running.url, running.app, running.llm


def ask(url: str, query: str, **cache: Any) -> dict[str, Any]:
    r = httpx.post(f"{url}/ask", json={"query": query, "cache": cache}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_semantic_hit_over_http(app_url: tuple[str, Any, ScriptedLLM]) -> None:
    url, _, llm = app_url
    first = ask(url, "How do I switch on the semantic cache?", semantic=True)
    assert first["cache"]["llm"] == "miss" and first.get("semantic") is None
    calls = llm.calls
    second = ask(url, "How can I switch on the semantic cache?", semantic=True)
    assert second["cache"]["llm"] == "semantic"
    assert second["semantic"]["matched_query"] == "How do I switch on the semantic cache?"
    assert second["semantic"]["similarity"] >= 0.94
    assert second["answer"] == first["answer"] and second["sources"] == first["sources"]
    assert llm.calls == calls

    events = parse(
        httpx.get(
            f"{url}/ask/stream",
            params={"query": "How can I switch on the semantic cache?", "semantic": "true"},
            timeout=60,
        ).text
    )
    assert (
        events[0][1]["cache"]["llm"] == "semantic"
        and events[0][1]["semantic"]["similarity"] >= 0.94
    )
    assert sum(name == "token" for name, _ in events) >= 2

    trap = ask(url, "How do I switch off the semantic cache?", semantic=True)
    assert trap["cache"]["llm"] == "miss" and llm.calls == calls + 1
    stats = httpx.get(f"{url}/stats").json()
    assert stats["layers"]["llm"]["semantic"] >= 1 and stats["semantic"]["entries"] >= 2


def test_cache_semantic_false_never_consults_the_semantic_cache(
    app_url: tuple[str, Any, ScriptedLLM], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, app, _ = app_url
    semantic = app.state.services.pipeline.semantic
    consulted: list[str] = []
    original = semantic.lookup

    async def spy(**kwargs: Any) -> Any:
        consulted.append(kwargs["query"])
        return await original(**kwargs)

    monkeypatch.setattr(semantic, "lookup", spy)
    ask(url, "Which port does the service listen on?", semantic=True)
    opted_out = ask(url, "Which port does this service listen on?", semantic=False)
    assert opted_out["cache"]["llm"] == "miss"
    # not set: the mode decides (these tests run in "on")
    assert ask(url, "Which port does this service listen on??")["cache"]["llm"] == "semantic"
    assert consulted == [
        "Which port does the service listen on?",
        "Which port does this service listen on??",
    ]


def test_a_corpus_change_ends_semantic_hits(app_url: tuple[str, Any, ScriptedLLM]) -> None:
    url, _, _ = app_url
    ask(url, "How do streamed answers get cached?", semantic=True)
    assert ask(url, "How do streamed answers get cached ?", semantic=True)["cache"]["llm"] in (
        "hit",
        "semantic",
    )
    httpx.post(f"{url}/documents", json={"doc_id": "new", "text": "Unrelated news."}, timeout=60)
    assert ask(url, "How do streamed answers get cached ?", semantic=True)["cache"]["llm"] == "miss"


# -- losing the subscription ---------------------------------------------------------------


def test_a_lost_subscription_clears_the_index(vectors: dict) -> None:  # type: ignore[type-arg]
    """Messages missed while disconnected are lost, so the index must not be trusted: it is
    cleared when the subscription breaks, and reloaded from Redis when it comes back. On its own
    server and event loop, bounded in time (in a full CI run it once waited forever on the
    session's loop)."""
    with embedded_valkey() as url:
        asyncio.run(_lose_the_subscription(url, vectors))


async def _lose_the_subscription(url: str, vectors: dict) -> None:  # type: ignore[type-arg]
    client = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    cache, answers = semantic_cache(client, f"lost-{time.monotonic_ns()}")
    reloads = 0
    real_reload = cache.reload

    async def counting_reload() -> int:
        nonlocal reloads
        reloads += 1
        return await real_reload()

    cache.reload = counting_reload  # type: ignore[method-assign]
    sync = asyncio.create_task(cache.run_sync())  # resubscribes 1 s after a loss
    try:
        async with asyncio.timeout(30):
            while reloads == 0:
                await asyncio.sleep(0.01)
            await remember(cache, answers, cache.scope("v1"), vectors[QUESTION])
            assert len(cache.index) == 1
            await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            deadline = time.monotonic() + 3
            while reloads < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        assert reloads == 2, "the index was not rebuilt after the subscription broke"
        assert cache.synced and len(cache.index) == 1  # rebuilt from Redis, not kept
    finally:
        sync.cancel()
        await asyncio.wait([sync], timeout=5)
        await client.aclose()
