"""Conversations: follow-ups are made standalone before any cache sees them, so no follow-up is
ever answered from another conversation's context; sessions slide their TTL and keep a bounded
history. HTTP tests run on the real parts (SmolLM2 rewrites and answers)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis

from rag.cache.aside import Background, CachedLayer
from rag.cache.gateway import RedisGateway
from rag.cache.layers import RewriteLayer
from rag.errors import CacheUnavailableError
from rag.metrics import Metrics
from rag.sessions import (
    QuestionRewriter,
    SessionStore,
    Turn,
    leans_on_context,
    rewrite_version,
)
from rag.tokens import get_encoding
from rag.types import Completion, Usage
from tests.conftest import Running


def session() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


def test_same_follow_up_after_different_questions_is_answered_in_each_context(
    running: Running,
) -> None:
    one, two = session(), session()
    assert running.ask("What does the EXPIRE command do in Redis?", session_id=one).is_success
    assert running.ask("How does Qdrant find the nearest vectors?", session_id=two).is_success

    follow_up = "And where does it keep them?"
    first = running.ask(follow_up, session_id=one).json()
    second = running.ask(follow_up, session_id=two).json()

    assert first["session_id"] == one and second["session_id"] == two
    assert first["standalone_query"] != second["standalone_query"]
    assert follow_up not in (first["standalone_query"], second["standalone_query"])
    assert second["cache"]["llm"] == "miss"  # not the answer the first conversation got
    assert first["sources"][0]["doc_id"] == "redis-facts"
    assert second["sources"][0]["doc_id"] == "qdrant-facts"


def test_a_standalone_question_hits_across_sessions(running: Running) -> None:
    question = "What is Qdrant used for?"
    first = running.ask(question, session_id=session()).json()
    assert first["standalone_query"] == question
    calls = len(running.llm_requests)

    again = running.ask(question, session_id=session()).json()
    assert again["cache"]["llm"] == "hit"
    assert again["answer"] == first["answer"]
    assert len(running.llm_requests) == calls


def test_the_same_conversation_replayed_costs_no_llm_call(running: Running) -> None:
    """The rewrite is keyed on the history and the follow-up, not on the session id."""
    turns = ["Which command sets a time to live in Redis?", "What unit does it use?"]
    one = session()
    for question in turns:
        assert running.ask(question, session_id=one).is_success
    calls = len(running.llm_requests)

    two = session()
    replies = [running.ask(question, session_id=two).json() for question in turns]
    assert [r["cache"]["llm"] for r in replies] == ["hit", "hit"]
    assert len(running.llm_requests) == calls


def test_stream_in_a_session_records_the_turn_when_done(running: Running) -> None:
    sid = session()
    events = running.stream("What does the EXPIRE command do in Redis?", session_id=sid)
    meta = events[0][1]
    assert meta["session_id"] == sid
    assert meta["standalone_query"] == "What does the EXPIRE command do in Redis?"
    answer = "".join(data["text"] for name, data in events if name == "token")

    view = httpx.get(f"{running.url}/sessions/{sid}").json()
    assert [t["question"] for t in view["turns"]] == ["What does the EXPIRE command do in Redis?"]
    assert view["turns"][0]["answer"] == answer
    assert 0 < view["ttl_s"] <= running.settings.session_ttl_s


def test_session_endpoints(running: Running) -> None:
    sid = session()
    assert httpx.get(f"{running.url}/sessions/{sid}").status_code == 404
    running.ask("What is Redis?", session_id=sid)
    assert httpx.get(f"{running.url}/sessions/{sid}").json()["session_id"] == sid
    deleted = httpx.delete(f"{running.url}/sessions/{sid}").json()
    assert deleted == {"session_id": sid, "deleted": True}
    assert httpx.get(f"{running.url}/sessions/{sid}").status_code == 404

    bad = running.ask("What is Redis?", session_id="not a valid id!")
    assert bad.status_code == 422
    assert "session_id" in bad.text
    assert httpx.get(f"{running.url}/sessions/{'x' * 200}").status_code == 422


# --- the session store and the rewriter, on the real Valkey ------------------------------------


@pytest.fixture
async def client(valkey_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(valkey_url)
    yield redis
    await redis.aclose()


def store(
    client: aioredis.Redis, tmp_path_factory: pytest.TempPathFactory, **kw: int
) -> SessionStore:
    values = {"ttl_s": 1800, "history_tokens": 1000} | kw
    return SessionStore(
        redis=RedisGateway(client=client, timeout_s=1.0),
        namespace=f"test-{uuid.uuid4().hex[:8]}",
        encoding=get_encoding("cl100k_base", tmp_path_factory.mktemp("tiktoken")),
        **values,
    )


async def test_ttl_slides_with_each_turn_and_an_idle_session_expires(
    client: aioredis.Redis, tmp_path_factory: pytest.TempPathFactory
) -> None:
    sessions = store(client, tmp_path_factory, ttl_s=2)
    sid = session()
    await sessions.append(sid, sessions.turn("q1", "q1", "a1"))
    await asyncio.sleep(1.2)
    await sessions.append(sid, sessions.turn("q2", "q2", "a2"))
    assert await client.pttl(sessions.key(sid)) > 1500  # extended back to ~2 s
    await asyncio.sleep(1.2)
    assert len(await sessions.turns(sid)) == 2  # 2.4 s after the first turn: still alive
    await asyncio.sleep(1.2)
    assert await sessions.turns(sid) == []
    assert await sessions.view(sid) is None


async def test_history_stays_within_its_token_budget_dropping_the_oldest(
    client: aioredis.Redis, tmp_path_factory: pytest.TempPathFactory
) -> None:
    sessions = store(client, tmp_path_factory, history_tokens=60)
    sid = session()
    turns = [sessions.turn(f"question {i}", f"question {i}", "word " * 15) for i in range(8)]
    for turn in turns:
        await sessions.append(sid, turn)
        kept = await sessions.turns(sid)
        assert sum(t.tokens for t in kept) <= 60
        assert kept[-1] == turn
    kept = await sessions.turns(sid)
    assert [t.question for t in kept] == [t.question for t in turns[-len(kept) :]]
    assert 1 < len(kept) < len(turns)


async def test_concurrent_turns_of_one_session_are_all_kept(
    client: aioredis.Redis, tmp_path_factory: pytest.TempPathFactory
) -> None:
    sessions = store(client, tmp_path_factory)
    sid = session()
    await asyncio.gather(
        *(sessions.append(sid, sessions.turn(f"q{i}", "s", "a")) for i in range(20))
    )
    assert sorted(t.question for t in await sessions.turns(sid)) == sorted(
        f"q{i}" for i in range(20)
    )


async def test_an_unreachable_session_store_is_an_error_not_an_empty_history(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.2)
    sessions = store(dead, tmp_path_factory)
    sid = session()
    try:
        for call in (
            lambda: sessions.turns(sid),
            lambda: sessions.view(sid),
            lambda: sessions.append(sid, sessions.turn("q", "q", "a")),
            lambda: sessions.delete(sid),
        ):
            with pytest.raises(CacheUnavailableError, match="session store"):
                await call()
    finally:
        await dead.aclose()


class ScriptedRewrites:
    """A generator that replies with the given texts in turn and counts its calls."""

    model_id = "scripted"

    def __init__(self, *replies: str) -> None:
        self.sampling: dict[str, float | int | str] = {"max_tokens": 32, "temperature": 0.0}
        self.replies = list(replies)
        self.calls = 0

    async def complete(self, messages: list[dict[str, str]]) -> Completion:
        self.calls += 1
        text = self.replies.pop(0)
        return Completion(text, (text,), Usage(10, 5), "stop", self.model_id)

    def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        raise NotImplementedError


def rewriter_for(
    llm: ScriptedRewrites, client: aioredis.Redis, metrics: Metrics, ttl_s: int = 60
) -> QuestionRewriter:
    """A rewriter whose rewrites are a ``CachedLayer`` over ``RewriteLayer``, as in the app."""
    spec = RewriteLayer(
        namespace=f"test-{uuid.uuid4().hex[:8]}",
        llm_model=llm.model_id,
        prompt_version=rewrite_version(),
        sampling=llm.sampling,
        ttl_s=ttl_s,
    )
    rewrites: CachedLayer[RewriteLayer, str] = CachedLayer(
        spec=spec,
        store=RedisGateway(client=client, timeout_s=1.0),
        metrics=metrics,
        background=Background(),
    )
    return QuestionRewriter(generator=llm, rewrites=rewrites, metrics=metrics, max_chars=2000)


HISTORY = [Turn("How long are embeddings cached?", "How long are embeddings cached?", "7 days.", 9)]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("How long are search results cached?", "How long are search results cached?"),
        (
            "Standalone question: How long are search results cached?",
            "How long are search results cached?",
        ),
        # an answer instead of a question, an echo with its reference unresolved, nothing
        (
            "Embeddings are cached for 7 days.",
            "How long are embeddings cached? And search results?",
        ),
        ("And search results?", "How long are embeddings cached? And search results?"),
        ("", "How long are embeddings cached? And search results?"),
    ],
)
async def test_rewrite_or_fall_back_to_the_conversation_bound_form(
    client: aioredis.Redis, reply: str, expected: str
) -> None:
    llm = ScriptedRewrites(reply)
    metrics = Metrics()
    rewriter = rewriter_for(llm, client, metrics)
    assert await rewriter.standalone("And search results?", []) == "And search results?"
    assert llm.calls == 0  # a first question is used as it is
    assert await rewriter.standalone("And search results?", HISTORY) == expected
    assert await rewriter.standalone("And search results?", HISTORY) == expected
    assert llm.calls == 1  # the second came from the cache
    # counted as the rewrite layer: a miss (computed) then a hit
    rows = metrics.snapshot()["layers"]["rewrite"]
    assert (rows["miss"], rows["hit"], metrics.snapshot()["upstream_calls"]["llm"]) == (1, 1, 1)
    other = [Turn("What is XFetch?", "What is XFetch?", "Early refresh.", 6)]
    assert rewriter.key("And search results?", HISTORY) != rewriter.key(
        "And search results?", other
    )


def test_leans_on_context() -> None:
    for question in ["And search results?", "how long does it last?", "Why?", "What about those?"]:
        assert leans_on_context(question), question
    for question in ["How long are LLM answers cached?", "What is a stampede lock?"]:
        assert not leans_on_context(question), question
