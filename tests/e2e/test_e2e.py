"""End to end through HTTP on the real parts: embedded Valkey, Qdrant local mode, MiniLM and
SmolLM2 on llama.cpp. Model text is checked loosely, cache behaviour exactly."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from rag.cache.gateway import RedisGateway
from rag.embedding import SentenceTransformerEmbedder
from rag.generation import OpenAIGenerator
from rag.settings import Settings
from services.app import create_app
from tests.conftest import Running, keys_of, serve
from tests.sse import iter_events, parse


def test_ask_misses_then_hits_with_identical_answer_and_no_llm_call(running: Running) -> None:
    first = running.ask("What does the EXPIRE command do in Redis?")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["cache"] == {"embedding": "miss", "search": "miss", "llm": "miss"}
    assert body["answer"].strip()
    assert body["sources"] and body["sources"][0]["doc_id"] == "redis-facts"
    assert set(body["sources"][0]) == {"doc_id", "chunk_id", "score", "text"}
    assert body["usage"]["completion_tokens"] > 0
    calls = len(running.llm_requests)

    second = running.ask("What does the EXPIRE command do in Redis?").json()
    assert second["cache"] == {"embedding": "hit", "search": "hit", "llm": "hit"}
    assert second["answer"] == body["answer"]
    assert second["sources"] == body["sources"]
    assert second["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}
    assert len(running.llm_requests) == calls


def _settled_round_trips(store: RedisGateway) -> int:
    """Round trips once the background work of the last request (a TTL extension the server's
    thread may send just after the response) is done: nothing more for 50 ms."""
    before = -1
    while store.round_trips != before:
        before = store.round_trips
        time.sleep(0.05)
    return before


def test_exact_repeat_costs_one_cache_round_trip_and_none_from_the_near_cache(
    running: Running,
) -> None:
    question = "Which command sets a time to live?"
    running.ask(question)
    running.ask(question)  # the first repeat learns which keys to prefetch
    corpus = running.app.state.services.corpus
    store = corpus.redis
    corpus.near.clear()  # as after RAG_NEAR_CACHE_FRESH_S: Redis again, once
    before = _settled_round_trips(store)
    assert running.ask(question).json()["cache"]["llm"] == "hit"
    assert store.round_trips - before == 1
    # The copies that read just made are fresh for RAG_NEAR_CACHE_FRESH_S (2 s) from now, not
    # from the first answer (on a slow machine that could be long enough ago to have gone stale).
    before = _settled_round_trips(store)
    assert running.ask(question).json()["cache"]["llm"] == "hit"
    assert store.round_trips - before == 0  # the near cache's fresh copy: no Redis at all


def test_stream_then_replay_gives_the_same_tokens(running: Running) -> None:
    question = "How does Qdrant find the nearest vectors?"
    live = running.stream(question)
    names = [name for name, _ in live]
    assert names[0] == "meta" and names[-1] == "done"
    assert live[0][1]["cache"]["llm"] == "miss"
    tokens = [data["text"] for name, data in live if name == "token"]
    assert len(tokens) >= 2
    assert live[-1][1]["usage"]["completion_tokens"] > 0
    calls = len(running.llm_requests)

    replay = running.stream(question)
    assert replay[0][1]["cache"] == {"embedding": "hit", "search": "hit", "llm": "hit"}
    assert [data["text"] for name, data in replay if name == "token"] == tokens
    assert replay[-1][0] == "done"
    assert len(running.llm_requests) == calls

    via_get = httpx.get(f"{running.url}/ask/stream", params={"query": question}, timeout=60)
    assert [d["text"] for n, d in parse(via_get.text) if n == "token"] == tokens
    assert running.ask(question).json()["answer"] == "".join(tokens)


def test_stream_wire_format(running: Running) -> None:
    """Each frame is ``event: <name>`` then one ``data:`` line of JSON (non-ASCII as is), or a
    keep-alive comment; a finished stream is meta, tokens, done."""
    r = httpx.post(
        f"{running.url}/ask/stream", json={"query": "Qu'est-ce que Redis ? Réponds."}, timeout=120
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache" and r.headers["x-accel-buffering"] == "no"
    assert r.text.endswith("\n\n")
    names = []
    for frame in r.text.removesuffix("\n\n").split("\n\n"):
        if frame.startswith(":"):
            continue
        event, data = frame.split("\n")
        assert event.startswith("event: ") and data.startswith("data: "), frame
        names.append(event.removeprefix("event: "))
        payload = data.removeprefix("data: ")
        assert payload == json.dumps(json.loads(payload), ensure_ascii=False)
    assert names[0] == "meta" and names[-1] == "done"
    assert set(names[1:-1]) == {"token"}


def test_answer_cached_by_ask_replays_as_several_token_events(running: Running) -> None:
    question = "What is Redis?"
    answer = running.ask(question).json()["answer"]
    tokens = [d["text"] for n, d in running.stream(question) if n == "token"]
    assert len(tokens) >= 2
    assert "".join(tokens) == answer


def test_keys_carry_model_ids_and_ttls_within_configured_values(running: Running) -> None:
    running.ask("Where does Redis keep its data?")
    s = running.settings
    limits = {
        "emb": s.embedding_ttl_s,
        "search": s.search_ttl_s,
        "llm": s.llm_ttl_s,
        # the live stream of a generation, kept briefly for late followers (locks live less)
        "flight": s.relay_stream_ttl_s,
        "tag": s.llm_ttl_s,  # doc tags of answers expire with their longest-lived member
        "sem": s.llm_ttl_s,  # a semantic entry lives as long as the answer it points to
    }
    seen = set()
    for key in keys_of(s.redis_url, s.namespace):
        layer = key.split(":")[2]
        ttl = running.redis.ttl(key)
        if ttl == -2:  # gone since the scan (a lock released, an entry expired): nothing to check
            continue
        assert 0 < ttl <= limits[layer], (key, ttl)  # -1 would be a key without a TTL
        seen.add(layer)
        if layer in ("emb", "search"):
            assert f":{s.embedding_model_id}:" in key
        if layer == "llm":
            assert f":{s.llm_model}:" in key
    assert seen >= {"emb", "search", "llm"}


def test_modes_control_reads_and_writes(running: Running) -> None:
    question = "Is Redis an in-memory store?"
    r = running.ask(question, cache={"mode": "no-store"}).json()
    assert r["cache"]["llm"] == "miss"
    assert (
        running.ask(question, cache={"mode": "no-store"}).json()["cache"]["llm"] == "miss"
    )  # nothing stored

    calls = len(running.llm_requests)
    r = running.ask(question, cache={"mode": "no-cache"}).json()
    assert r["cache"] == {"embedding": "bypass", "search": "bypass", "llm": "bypass"}
    assert len(running.llm_requests) == calls + 1
    assert running.ask(question).json()["cache"]["llm"] == "hit"  # no-cache still wrote

    r = running.ask(question, cache={"mode": "refresh"}).json()
    assert r["cache"]["llm"] == "bypass"
    assert len(running.llm_requests) == calls + 2
    assert running.ask(question, cache={"mode": "no-store"}).json()["cache"]["llm"] == "hit"


def test_replacing_a_document_changes_search_results_and_answers(running: Running) -> None:
    question = "What colour is the office door?"
    httpx.post(
        f"{running.url}/documents",
        json={"doc_id": "door", "text": "The office door is painted red."},
        timeout=60,
    )
    first = running.ask(question).json()
    assert "red" in " ".join(s["text"] for s in first["sources"])
    assert running.ask(question).json()["cache"]["llm"] == "hit"

    r = httpx.post(
        f"{running.url}/documents",
        json={"doc_id": "door", "text": "The office door is painted blue."},
        timeout=60,
    )
    assert r.status_code == 201 and r.json()["replaced_chunks"] == 1
    after = running.ask(question).json()
    assert after["cache"]["search"] == "miss" and after["cache"]["llm"] == "miss"
    texts = " ".join(s["text"] for s in after["sources"])
    assert "blue" in texts and "red" not in texts

    assert httpx.delete(f"{running.url}/documents/door", timeout=60).json() == {
        "doc_id": "door",
        "deleted_chunks": 1,
    }
    gone = running.ask(question).json()
    assert "door" not in {s["doc_id"] for s in gone["sources"]}
    assert httpx.delete(f"{running.url}/documents/door", timeout=60).status_code == 404


def test_corrupt_entries_are_misses_and_are_replaced(running: Running) -> None:
    question = "What is a time to live?"
    before = set(keys_of(running.settings.redis_url, running.settings.namespace))
    first = running.ask(question).json()
    new_keys = {
        k
        for k in set(keys_of(running.settings.redis_url, running.settings.namespace)) - before
        if k.split(":")[2] != "flight"  # the generation's live stream, not a cache entry
    }
    assert {k.split(":")[2] for k in new_keys} == {"emb", "search", "llm", "sem"}
    for key in new_keys:
        running.redis.set(key, b"\x00garbage", ex=60)
    running.app.state.services.corpus.near.clear()  # as once its fresh copies age: Redis is read

    r = running.ask(question)
    assert r.status_code == 200, r.text
    assert r.json()["cache"] == {"embedding": "miss", "search": "miss", "llm": "miss"}
    assert r.json()["answer"] == first["answer"]  # temperature 0
    for key in new_keys:
        assert running.redis.get(key) != b"\x00garbage"
    assert running.ask(question).json()["cache"]["llm"] == "hit"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"query": ""}, 422, "query"),
        ({"query": "   "}, 400, "query must not be empty"),
        ({"query": "x", "top_k": 0}, 422, "top_k"),
        ({"query": "x", "top_k": 500}, 422, "top_k must be between 1 and 20"),
        ({"query": "x" * 3000}, 422, "longer than 2000"),
        ({"query": "x", "cache": {"mode": "sometimes"}}, 422, "mode"),
        ({"query": "x", "cache": {"threshold": 1.5}}, 422, "threshold"),
        ({"query": "x", "unknown": 1}, 422, "unknown"),
    ],
)
def test_bad_requests_get_a_clear_4xx(
    running: Running, body: dict, status: int, message: str
) -> None:  # type: ignore[type-arg]
    for path in ("/ask", "/ask/stream"):
        r = httpx.post(f"{running.url}{path}", json=body, timeout=30)
        assert r.status_code == status, (path, r.text)
        assert message in r.text


def test_bad_documents_get_a_clear_4xx(running: Running) -> None:
    r = httpx.post(f"{running.url}/documents", json={"doc_id": "../etc", "text": "x"}, timeout=30)
    assert r.status_code == 400 and "doc_id" in r.text
    r = httpx.post(f"{running.url}/documents", json={"doc_id": "ok", "text": ""}, timeout=30)
    assert r.status_code == 422


def test_health_stats_and_metrics(running: Running) -> None:
    health = httpx.get(f"{running.url}/healthz").json()
    assert health["status"] == "ok" and health["chunks"] >= 2
    # counted from here, so the test does not depend on what other tests asked before it
    before = httpx.get(f"{running.url}/stats").json()
    question = "Which Redis command gives a key a time to live in seconds?"
    first = running.ask(question, cache={"semantic": False}).json()
    assert first["cache"]["llm"] == "miss"
    assert running.ask(question, cache={"semantic": False}).json()["cache"]["llm"] == "hit"
    stats = httpx.get(f"{running.url}/stats").json()
    llm, llm_before = stats["layers"]["llm"], before["layers"]["llm"]
    assert (llm["hit"] - llm_before["hit"], llm["miss"] - llm_before["miss"]) == (1, 1)
    assert stats["upstream_calls"]["llm"] - before["upstream_calls"]["llm"] == 1
    metrics = httpx.get(f"{running.url}/metrics").text
    assert 'rag_cache_requests_total{layer="llm",result="hit"}' in metrics
    assert "rag_llm_calls_total" in metrics and "rag_stage_seconds_bucket" in metrics
    # the hit saved what the miss spent, priced (by default at gpt-4o-mini's list price)
    spent = first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    assert stats["tokens_saved"] - before["tokens_saved"] == spent > 0
    assert stats["cost_saved_usd"] > before["cost_saved_usd"]
    assert "rag_cost_saved_usd_total" in metrics


async def test_ping_tells_a_running_llm_from_an_unreachable_one(llm_base_url: str) -> None:
    async def ping(base_url: str) -> bool:
        async with openai.AsyncOpenAI(base_url=base_url, api_key="not-needed") as client:
            generator = OpenAIGenerator(client=client, model_id="m", max_tokens=8, temperature=0)
            return await generator.ping()

    assert await ping(llm_base_url) is True
    assert await ping("http://127.0.0.1:1/v1") is False


def test_health_reports_the_llm(
    running: Running, tmp_path: Path, embedder: SentenceTransformerEmbedder, valkey_url: str
) -> None:
    health = httpx.get(f"{running.url}/healthz").json()
    assert health["llm"] == "up" and health["status"] == "ok"

    settings = Settings(
        data_dir=tmp_path,
        namespace=f"{running.settings.namespace}-nollm",
        redis_url=valkey_url,
        llm_base_url="http://127.0.0.1:1/v1",  # nothing listens there
        seed_sample_corpus=False,
    )
    with serve(create_app(settings, embedder=embedder)) as url:
        health = httpx.get(f"{url}/healthz", timeout=30).json()
    assert health | {"chunks": None} == {
        "status": "degraded",
        "cache": "up",
        "vector_db": "up",
        "llm": "down",
        "chunks": None,
        "corpus_version": health["corpus_version"],
    }
    assert len(health["corpus_version"]) == 16  # read from the vector store at start


def test_unreachable_redis_still_answers_with_bypass(
    tmp_path: Path, embedder: SentenceTransformerEmbedder, llm_base_url: str
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        redis_url="redis://127.0.0.1:1",
        llm_base_url=llm_base_url,
        seed_sample_corpus=True,
        llm_max_tokens=24,
    )
    with serve(create_app(settings, embedder=embedder)) as url:
        r = httpx.post(f"{url}/ask", json={"query": "How long are answers cached?"}, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["cache"] == {"embedding": "bypass", "search": "bypass", "llm": "bypass"}
        assert r.json()["sources"], "the sample corpus was ingested on first start"
        with httpx.stream(
            "GET", f"{url}/ask/stream", params={"query": "What is the no-store mode?"}, timeout=120
        ) as s:
            events = list(iter_events(s.iter_lines()))
        assert events[0][1]["cache"]["llm"] == "bypass" and events[-1][0] == "done"
        assert httpx.get(f"{url}/healthz").json()["status"] == "degraded"
