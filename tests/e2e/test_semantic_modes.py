"""Semantic cache v3 over HTTP: the modes (shadow never serves; auto serves only within the
measured bound and stops when outcomes push it over), request ids and feedback (per tenant,
once per answer), on real Redis, MiniLM and the shipped rule with a scripted LLM."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from rag.cache.gateway import RedisGateway
from rag.embedding import SentenceTransformerEmbedder
from rag.semantic.outcomes import OutcomeStore
from rag.semantic.policy import SemanticPolicy
from rag.settings import Settings
from tests.conftest import ScriptedApp, serve_scripted
from tests.e2e.conftest import ACME, ADMIN, GLOBEX, ask
from tests.redis_servers import redis_server
from tests.sse import parse

QUESTION = "How do I switch on the semantic cache?"
REWORDING = "How can I switch on the semantic cache?"


def post(app: ScriptedApp, key: str | None, path: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{app.url}{path}", json=body, headers=headers, timeout=60)


def scopes(app: ScriptedApp, key: str | None = None) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    stats = httpx.get(f"{app.url}/stats", headers=headers, timeout=30).json()
    return stats["semantic"]["scopes"]  # type: ignore[no-any-return]


def policy(app: ScriptedApp) -> SemanticPolicy:
    found = app.app.state.services.pipeline.policy
    assert found is not None
    return found  # type: ignore[no-any-return]


def wait_for_judged(app: ScriptedApp, judged: int, timeout_s: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while (row := scopes(app)[0])["judged"] < judged:
        assert time.monotonic() < deadline, row
        time.sleep(0.1)
    return row


def test_the_default_mode_is_shadow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAG_SEMANTIC_MODE", raising=False)  # set to "on" for the other tests
    assert Settings().semantic_mode == "shadow"


@pytest.fixture(scope="module")
def shadow(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder, valkey_url: str
) -> Iterator[ScriptedApp]:
    with serve_scripted(
        tmp_path_factory, embedder, valkey_url, "shadow", semantic_mode="shadow"
    ) as app:
        yield app


def test_shadow_never_serves_and_judges_each_candidate(shadow: ScriptedApp) -> None:
    first = ask(shadow, None, QUESTION, cache={"semantic": True}).json()
    assert first["cache"]["llm"] == "miss" and first["request_id"]
    calls = shadow.llm.calls
    again = ask(shadow, None, REWORDING, cache={"semantic": True}).json()
    assert again["cache"]["llm"] == "miss" and again.get("semantic") is None
    assert shadow.llm.calls == calls + 1  # generated: a shadow candidate is never served
    row = wait_for_judged(shadow, 1)  # the two answers, judged once the miss's was done
    assert row["serving"] is False and row["false_hits"] == 0  # the scripted LLM says one thing

    streamed = httpx.post(
        f"{shadow.url}/ask/stream", json={"query": "How could I switch on the semantic cache?"}
    )
    events = parse(streamed.text)
    assert events[0][1]["cache"]["llm"] == "miss"
    assert events[-1][0] == "done" and events[-1][1]["request_id"]
    wait_for_judged(shadow, 2)
    stats = httpx.get(f"{shadow.url}/stats").json()["semantic"]
    assert stats["mode"] == "shadow" and stats["scopes"][0]["threshold"] is None
    assert stats["scopes"][0]["false_hit_upper_95"] > 0.02  # two outcomes prove nothing yet


def two_tenants(
    factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder, url: str, mode: str
) -> contextlib.AbstractContextManager[ScriptedApp]:
    """An app in ``mode`` with no audits and two tenants, acme (the default) and globex."""
    keys = {"api_keys": [f"acme:{ACME}", f"globex:{GLOBEX}"], "admin_api_key": ADMIN}
    return serve_scripted(
        factory, embedder, url, mode, semantic_mode=mode, semantic_audit_rate=0.0, **keys
    )


@pytest.fixture(scope="module")
def auto(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder, valkey_url: str
) -> Iterator[ScriptedApp]:
    with two_tenants(tmp_path_factory, embedder, valkey_url, "auto") as app:
        yield app


def record(app: ScriptedApp, outcomes: int, *, correct: bool) -> None:
    """``outcomes`` judged candidates at similarity 0.99 in acme's scope, as shadow, audits or
    feedback would count them (through a client of this test's own event loop)."""
    live = policy(app)

    async def run() -> None:
        client = aioredis.Redis.from_url(app.settings.redis_url)
        store = OutcomeStore(
            redis=RedisGateway(client=client, timeout_s=5.0),
            namespace=app.app.state.services.default.namespace,
            grid=live.outcomes.grid,
            ttl_s=600,
        )
        for _ in range(outcomes):
            assert await store.record(live.scope, 0.99, correct=correct)
        await client.aclose()

    asyncio.run(run())


def test_auto_serves_within_the_bound_and_stops_when_false_hits_push_it_over(
    auto: ScriptedApp,
) -> None:
    # acme's scope: nothing judged yet, so nothing is served
    assert ask(auto, ACME, QUESTION).json()["cache"]["llm"] == "miss"
    assert ask(auto, ACME, REWORDING).json()["cache"]["llm"] == "miss"
    [row] = scopes(auto, ACME)
    assert row["serving"] is False and row["threshold"] is None

    record(auto, 300, correct=True)  # 0 false in 300 (+ what shadow judged): bound ~1 %
    [row] = scopes(auto, ACME)
    assert row["serving"] is True and row["threshold"] == 0.86 and row["judged"] >= 300
    hit = ask(auto, ACME, "How could I switch on the semantic cache?").json()
    assert hit["cache"]["llm"] == "semantic"

    # users say three served hits were wrong: 3 in ~300 puts the bound over 2 %
    record(auto, 3, correct=False)
    [row] = scopes(auto, ACME)
    assert row["serving"] is False and row["false_hit_upper_95"] > 0.02
    after = ask(auto, ACME, "How would I switch on the semantic cache?").json()
    assert after["cache"]["llm"] == "miss"
    metrics = httpx.get(f"{auto.url}/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text
    assert "rag_semantic_serving{" in metrics and "rag_semantic_false_hit_upper_95{" in metrics

    # globex's scope is its own: it has seen none of acme's outcomes
    [other] = scopes(auto, GLOBEX)
    assert other["judged"] == 0 and other["scope"] != row["scope"]
    assert len(scopes(auto, ADMIN)) == 2


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder, valkey_url: str
) -> Iterator[ScriptedApp]:
    with two_tenants(tmp_path_factory, embedder, valkey_url, "on") as app:
        yield app


def test_feedback_is_per_tenant_once_per_answer_and_unknown_ids_are_404(
    served: ScriptedApp,
) -> None:
    answer = ask(served, ACME, "What does the near cache keep?").json()
    request_id = answer["request_id"]
    verdict = {"request_id": request_id, "correct": True}
    # another tenant cannot name acme's answer, nor can the admin (feedback is a tenant's)
    assert post(served, GLOBEX, "/feedback", verdict).status_code == 404
    assert post(served, None, "/feedback", verdict).status_code == 401
    forged = {"request_id": request_id[:-4] + "AAAA", "correct": False}
    assert post(served, ACME, "/feedback", forged).status_code == 404
    assert (
        post(served, ACME, "/feedback", {"request_id": "nope", "correct": True}).status_code == 404
    )
    bad = post(served, ACME, "/feedback", {"request_id": request_id, "correct": "yes"})
    assert bad.status_code == 422
    taken = post(served, ACME, "/feedback", verdict)
    assert taken.status_code == 200, taken.text
    assert taken.json()["outcome"] == "recorded"
    assert post(served, ACME, "/feedback", verdict).status_code == 409


def test_an_exact_answer_marked_incorrect_leaves_the_cache(served: ScriptedApp) -> None:
    question = "How long does the near cache keep a copy?"
    first = ask(served, ACME, question).json()
    assert ask(served, ACME, question).json()["cache"]["llm"] == "hit"
    globex = ask(served, GLOBEX, question).json()
    assert ask(served, GLOBEX, question).json()["cache"]["llm"] == "hit"
    r = post(served, ACME, "/feedback", {"request_id": first["request_id"], "correct": False})
    assert r.status_code == 200 and r.json()["outcome"] == "the cached answer was removed"
    calls = served.llm.calls
    assert ask(served, ACME, question).json()["cache"]["llm"] == "miss"
    assert served.llm.calls == calls + 1
    # globex's own answer is untouched
    assert ask(served, GLOBEX, question).json()["cache"]["llm"] == "hit"
    assert globex["request_id"] != first["request_id"]


def test_a_semantic_hit_marked_incorrect_stops_reaching_that_question(
    served: ScriptedApp,
) -> None:
    ask(served, ACME, QUESTION)
    hit = ask(served, ACME, REWORDING).json()
    assert hit["cache"]["llm"] == "semantic"
    row_before = scopes(served, ACME)[0]
    r = post(served, ACME, "/feedback", {"request_id": hit["request_id"], "correct": False})
    assert r.status_code == 200 and "false semantic hit" in r.json()["outcome"]
    row = scopes(served, ACME)[0]
    assert row["false_hits"] == row_before["false_hits"] + 1
    assert ask(served, ACME, REWORDING).json()["cache"]["llm"] == "miss"  # its own answer now
    # the link is dropped for that question only: another rewording still gets the hit
    other = ask(served, ACME, "How could I switch on the semantic cache?").json()
    assert other["cache"]["llm"] in ("semantic", "hit")


def test_a_verdict_redis_did_not_count_is_a_503_and_can_be_given_again(
    served: ScriptedApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    ask(served, ACME, "How do I turn on the semantic cache?")
    hit = ask(served, ACME, "How can I turn on the semantic cache?").json()
    assert hit["cache"]["llm"] == "semantic"
    verdict = {"request_id": hit["request_id"], "correct": True}

    async def refused(*_: object, **__: object) -> bool:
        return False  # what the store says when Redis did not take the increments

    store = policy(served).outcomes
    judged = scopes(served, ACME)[0]["judged"]
    monkeypatch.setattr(store, "record", refused)
    lost = post(served, ACME, "/feedback", verdict)
    assert lost.status_code == 503 and lost.headers["retry-after"], lost.text
    monkeypatch.undo()
    again = post(served, ACME, "/feedback", verdict)
    assert (
        again.status_code == 200 and again.json()["outcome"] == "counted as a correct semantic hit"
    )
    assert scopes(served, ACME)[0]["judged"] == judged + 1


def test_audited_hits_are_regenerated_and_judged(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder, valkey_url: str
) -> None:
    with serve_scripted(
        tmp_path_factory, embedder, valkey_url, "audit", semantic_mode="on", semantic_audit_rate=1.0
    ) as app:
        ask(app, None, QUESTION)
        calls = app.llm.calls
        hit = ask(app, None, REWORDING).json()
        assert hit["cache"]["llm"] == "semantic"  # served at once ...
        row = wait_for_judged(app, 1)  # ... then regenerated in the background and judged
        assert app.llm.calls == calls + 1
        assert row["serving"] is True and row["false_hits"] == 0
        # the regenerated answer is the rewording's own now: an exact hit
        assert ask(app, None, REWORDING).json()["cache"]["llm"] == "hit"


def test_auto_fails_safe_when_redis_stalls_dies_or_rolls_back(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder
) -> None:
    """With the outcomes in a private redis-server that snapshots: serving at first; a stall and
    a dead server cost no 5xx on /ask (feedback says 503, Retry-After); a restart from a
    snapshot taken before three false hits does not bring serving back: the process remembers
    the false hits it saw and writes them back."""
    with (
        redis_server(tmp_path / "redis", "--enable-debug-command", "yes") as server,
        serve_scripted(
            tmp_path_factory,
            embedder,
            server.url,
            "auto-faults",
            semantic_mode="auto",
            semantic_audit_rate=0.0,
        ) as app,
    ):
        ask(app, None, QUESTION)
        record(app, 300, correct=True)
        hit = ask(app, None, REWORDING).json()
        assert hit["cache"]["llm"] == "semantic" and scopes(app)[0]["serving"] is True
        client = redis.Redis.from_url(server.url)
        client.save()  # the snapshot a rollback returns to: 300 outcomes, no false hit
        record(app, 3, correct=False)
        assert scopes(app)[0]["serving"] is False  # read by this process: it has seen them

        stall = threading.Thread(target=client.execute_command, args=("DEBUG", "SLEEP", "2"))
        stall.start()
        time.sleep(0.2)
        stalled = ask(app, None, "How would I switch on the semantic cache?")
        late = post(app, None, "/feedback", {"request_id": hit["request_id"], "correct": True})
        stall.join(timeout=10)
        assert stalled.status_code == 200 and stalled.json()["cache"]["llm"] != "semantic"
        assert late.status_code == 503 and late.headers["retry-after"]

        server.stop()
        dead = ask(app, None, "How might I switch on the semantic cache?")
        assert dead.status_code == 200 and dead.json()["cache"]["llm"] == "bypass"
        verdict = post(app, None, "/feedback", {"request_id": hit["request_id"], "correct": True})
        assert verdict.status_code == 503 and verdict.headers["retry-after"]

        server.start()  # loads the snapshot: the three false hits are gone from Redis
        key = f"rag:{app.app.state.services.default.namespace}:semq:{policy(app).scope}"
        assert int(client.hget(key, "f:0.86") or 0) == 0
        deadline = time.monotonic() + 10
        while int(client.hget(key, "f:0.86") or 0) < 3:  # written back by a read
            scopes(app)  # reads them
            assert time.monotonic() < deadline
            time.sleep(0.2)
        row = scopes(app)[0]
        assert row["serving"] is False and row["false_hits"] >= 3 and row["judged"] >= 303
        again = ask(app, None, "How should I switch on the semantic cache?").json()
        assert again["cache"]["llm"] != "semantic"
        client.close()


def test_a_full_redis_costs_answers_nothing_and_a_verdict_a_503(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder
) -> None:
    """Redis past maxmemory with noeviction refuses every write (OOM): questions are still
    answered in auto mode (nothing is served from a semantic scope that could not count),
    a verdict is a 503 with Retry-After, and once Redis has room the same verdict is taken."""
    with (
        redis_server(tmp_path / "redis", "--maxmemory-policy", "noeviction") as server,
        serve_scripted(tmp_path_factory, embedder, server.url, "full", semantic_mode="auto") as app,
    ):
        first = ask(app, None, QUESTION).json()
        client = redis.Redis.from_url(server.url)
        client.mset({f"filler:{i}": b"x" * 4096 for i in range(1000)})  # ~4 MB
        client.config_set("maxmemory", "1mb")  # far below what it holds: no write fits
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            client.set("probe", b"x")
        for query in (REWORDING, "What does the near cache keep when Redis is full?"):
            r = ask(app, None, query)
            assert r.status_code == 200 and r.json()["cache"]["llm"] != "semantic", r.text
        verdict = {"request_id": first["request_id"], "correct": False}
        full = post(app, None, "/feedback", verdict)
        assert full.status_code == 503 and full.headers["retry-after"], full.text
        assert httpx.get(f"{app.url}/stats").status_code == 200

        client.config_set("maxmemory", "0")  # room again
        taken = post(app, None, "/feedback", verdict)
        assert taken.status_code == 200, taken.text
        assert taken.json()["outcome"] == "the cached answer was removed"
        client.close()
