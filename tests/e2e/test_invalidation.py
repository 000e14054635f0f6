"""Invalidation through HTTP on the real pipeline (local LLM, embedded Valkey, Qdrant, MiniLM):
answers follow their sources, tags delete exactly their entries and stay bounded, other
processes' semantic indexes drop invalidated entries, admin keys guard it all."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from rag.cache.gateway import RedisGateway
from rag.cache.layers import AnswerLayer
from rag.cache.layers.base import Freshness
from rag.embedding import SentenceTransformerEmbedder
from rag.semantic.cache import SemanticCache
from rag.semantic.index import SemanticIndex
from rag.settings import Settings
from services.app import create_app
from tests.conftest import keys_of, serve

ADMIN = {"Authorization": "Bearer test-admin-key"}
FACTS = {
    "vault": "The vault code word is APPLE. Only the night guard knows the vault code word.",
    "garden": "The garden has seven apple trees and a small pond with goldfish.",
    "parking": "Visitors park in lot C, next to the north entrance of the building.",
}
QUESTIONS = {
    "vault": "What is the vault code word?",
    "garden": "How many apple trees are in the garden?",
    "parking": "Where do visitors park?",
}


@pytest.fixture(scope="module")
def app(
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    llm_base_url: str,
    valkey_url: str,
) -> Iterator[tuple[str, Settings, Any]]:
    settings = Settings(
        namespace=f"inval-{uuid.uuid4().hex[:8]}",
        data_dir=tmp_path_factory.mktemp("inval"),
        redis_url=valkey_url,
        llm_base_url=llm_base_url,
        llm_max_tokens=24,
        top_k=1,
        seed_sample_corpus=False,
        admin_api_key="test-admin-key",  # type: ignore[arg-type]
    )
    application = create_app(settings, embedder=embedder)
    with serve(application) as url:
        for doc_id, text in FACTS.items():
            put(url, doc_id, text)
        yield url, settings, application


def put(url: str, doc_id: str, text: str) -> None:
    r = httpx.post(
        f"{url}/documents", json={"doc_id": doc_id, "text": text}, headers=ADMIN, timeout=60
    )
    assert r.status_code == 201, r.text


def ask(url: str, query: str, **cache: Any) -> dict[str, Any]:
    r = httpx.post(f"{url}/ask", json={"query": query, "cache": cache}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def llm_keys(settings: Settings) -> set[str]:
    return {k for k in keys_of(settings.redis_url, settings.namespace) if ":llm:" in k}


def test_an_update_is_never_served_stale_and_unrelated_answers_keep_hitting(
    app: tuple[str, Settings, Any],
) -> None:
    url, _, _ = app
    for question in QUESTIONS.values():
        ask(url, question)
        assert ask(url, question)["cache"]["llm"] == "hit"

    put(
        url,
        "vault",
        "The vault code word is BANANA. Only the night guard knows the vault code word.",
    )
    after = ask(url, QUESTIONS["vault"])
    assert after["cache"]["llm"] == "miss"  # the old answer is not served
    assert "BANANA" in after["sources"][0]["text"] and "APPLE" not in after["sources"][0]["text"]
    for doc_id in ("garden", "parking"):  # built on unchanged chunks: still hits
        unaffected = ask(url, QUESTIONS[doc_id])
        assert unaffected["cache"] == {"embedding": "hit", "search": "miss", "llm": "hit"}


def test_deleting_a_document_removes_its_answers_and_semantic_entries(
    app: tuple[str, Settings, Any],
) -> None:
    url, settings, application = app
    put(url, "lobby", "The lobby opens at eight in the morning and closes at six in the evening.")

    def sem_keys() -> set[str]:
        return {k for k in keys_of(settings.redis_url, settings.namespace) if ":sem:" in k}

    before, sem_before = llm_keys(settings), sem_keys()
    ask(url, "When does the lobby open?", semantic=True)
    new, sem = llm_keys(settings) - before, sem_keys() - sem_before
    semantic = application.state.services.pipeline.semantic
    assert new and sem and len(semantic.index) >= 1

    r = httpx.delete(f"{url}/documents/lobby", headers=ADMIN, timeout=60)
    assert r.status_code == 200
    remaining = set(keys_of(settings.redis_url, settings.namespace))
    assert not (new & remaining) and not (sem & remaining)
    assert ask(url, "When does the lobby open ?", semantic=True)["cache"]["llm"] == "miss"


def test_tag_invalidation_removes_exactly_its_entries(app: tuple[str, Settings, Any]) -> None:
    url, settings, _ = app
    ask(url, QUESTIONS["garden"])
    ask(url, QUESTIONS["parking"])
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    tag = f"rag:{settings.namespace}:tag:doc:garden"
    garden = set(client.zrange(tag, 0, -1))
    others = llm_keys(settings) - garden
    assert garden and others

    r = httpx.post(f"{url}/cache/invalidate", json={"tag": "doc:garden"}, headers=ADMIN, timeout=30)
    assert r.status_code == 200 and r.json() == {"deleted": len(garden)}
    remaining = llm_keys(settings)
    assert not (garden & remaining) and others <= remaining
    assert ask(url, QUESTIONS["garden"])["cache"]["llm"] == "miss"
    assert ask(url, QUESTIONS["parking"])["cache"]["llm"] == "hit"


def test_tag_sets_stay_bounded_under_churn(app: tuple[str, Settings, Any]) -> None:
    url, settings, _ = app
    client = redis.Redis.from_url(settings.redis_url)
    tag = f"rag:{settings.namespace}:tag:doc:menu"
    members, tag_bytes, answers = [], [], []
    for i in range(12):
        put(url, "menu", f"Today the canteen serves dish number {i} with rice.")
        ask(url, "What does the canteen serve today?")
        members.append(client.zcard(tag))
        tag_bytes.append(client.memory_usage(tag))
        answers.append(sum(":llm:" in k for k in keys_of(settings.redis_url, settings.namespace)))
    # each update dropped the previous answer and its semantic entry ("on" mode), and their
    # memberships
    assert max(members) == 2
    assert max(tag_bytes) <= 1.1 * min(tag_bytes)  # the tag set's memory is flat
    assert len(set(answers)) == 1  # and so is the number of cached answers
    # (search results of old corpus versions are never read again and age out by their TTL)


def test_layer_and_all_invalidation(app: tuple[str, Settings, Any]) -> None:
    url, settings, _ = app
    ask(url, QUESTIONS["parking"])
    layers = lambda: {k.split(":")[2] for k in keys_of(settings.redis_url, settings.namespace)}  # noqa: E731
    assert {"emb", "search", "llm"} <= layers()
    r = httpx.post(
        f"{url}/cache/invalidate", json={"layer": "embedding"}, headers=ADMIN, timeout=30
    )
    assert r.status_code == 200 and r.json()["deleted"] >= 1
    assert "emb" not in layers() and "llm" in layers()
    r = httpx.post(f"{url}/cache/invalidate", json={"all": True}, headers=ADMIN, timeout=30)
    assert r.status_code == 200
    assert layers() <= {"flight"}  # live streams of generations (relay_stream_ttl_s)
    assert ask(url, QUESTIONS["parking"])["cache"]["llm"] == "miss"


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ({"all": True}, {}, 401),
        ({"all": True}, {"Authorization": "Bearer wrong"}, 401),
        ({"layer": "llm", "tag": "doc:x"}, ADMIN, 422),
        ({}, ADMIN, 422),
        ({"layer": "everything"}, ADMIN, 422),
    ],
)
def test_invalidation_needs_the_admin_key_and_one_target(
    app: tuple[str, Settings, Any], body: dict[str, Any], headers: dict[str, str], status: int
) -> None:
    url, _, _ = app
    r = httpx.post(f"{url}/cache/invalidate", json=body, headers=headers, timeout=30)
    assert r.status_code == status, r.text
    r = httpx.post(
        f"{url}/documents", json={"doc_id": "x", "text": "y"}, headers=headers, timeout=30
    )
    assert r.status_code == (201 if headers == ADMIN else 401)


def test_another_process_drops_an_invalidated_semantic_entry(
    app: tuple[str, Settings, Any], tmp_path: Path
) -> None:
    url, settings, application = app
    put(url, "gym", "The gym on the second floor is open to all staff until ten at night.")

    async def scenario() -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        served = application.state.services.pipeline.semantic
        # the answer layer only names the namespace here: this copy never looks anything up
        answers = AnswerLayer(
            namespace=settings.namespace,
            llm_model=settings.llm_model,
            prompt_version="unused",
            sampling={},
            ttl_s=60,
            freshness=Freshness(soft_ttl_s=60),
        )
        other = SemanticCache(  # another process's copy: its own index, fed only by Redis
            redis=RedisGateway(client=client, timeout_s=1.0),
            rule=served.rule,
            index=SemanticIndex(dimension=384, max_entries=100),
            answers=answers,
            embedding_model_id=settings.embedding_model_id,
        )
        sync = asyncio.create_task(other.run_sync())
        try:
            await asyncio.sleep(0.5)
            await asyncio.to_thread(ask, url, "Until when is the gym open?", semantic=True)
            deadline = time.monotonic() + 2
            while not len(other.index) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert len(other.index) >= 1
            r = await asyncio.to_thread(
                httpx.post, f"{url}/cache/invalidate", json={"tag": "doc:gym"}, headers=ADMIN
            )
            assert r.status_code == 200
            started = time.monotonic()
            while any("gym" in e.query for e in other.index._entries.values()):
                assert time.monotonic() - started < 1.0, "not dropped within a second"
                await asyncio.sleep(0.02)
        finally:
            sync.cancel()
            await asyncio.gather(sync, return_exceptions=True)
            await client.aclose()

    asyncio.run(scenario())
