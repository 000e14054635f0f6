"""Single-flight on real parts (embedded Valkey, Qdrant, MiniLM): identical concurrent misses
make one embedding, one search and one LLM call, in one process and across processes; one
upstream stream feeds every identical stream; a dead leader is taken over; a failed leader
fails its followers and caches nothing. The LLM is scripted (deterministic timing) except in
the two-process tests, which use the real local LLM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rag.embedding import SentenceTransformerEmbedder
from rag.settings import Settings
from services.app import create_app
from tests.conftest import keys_of, serve, serve_scripted, start_app_process
from tests.scripted_llm import WORDS, ScriptedLLM
from tests.sse import parse


@pytest.fixture(scope="module")
def scripted_app(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder, valkey_url: str
) -> Iterator[tuple[str, Settings, ScriptedLLM]]:
    # A generous Redis deadline: these tests count coalescing, and on a loaded machine a 250 ms
    # deadline trips the fail-open path, where each request rightly goes its own way.
    with serve_scripted(
        tmp_path_factory, embedder, valkey_url, "flight", redis_timeout_s=2.0
    ) as running:
        yield running.url, running.settings, running.llm


def calls(url: str) -> dict[str, float]:
    return httpx.get(f"{url}/stats").json()["upstream_calls"]  # type: ignore[no-any-return]


async def _gather(n: int, make: Any) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        return await asyncio.gather(*(make(client) for _ in range(n)))


def test_100_identical_asks_make_one_call_per_stage(
    scripted_app: tuple[str, Settings, ScriptedLLM],
) -> None:
    url, _, llm = scripted_app
    before, llm_before = calls(url), llm.calls
    body = {"query": "How long are answers cached (single-flight)?"}
    responses = asyncio.run(_gather(100, lambda c: c.post(f"{url}/ask", json=body)))
    assert all(r.status_code == 200 for r in responses), {r.status_code for r in responses}
    after = calls(url)
    assert llm.calls - llm_before == 1
    assert {k: after[k] - before[k] for k in after} == {"llm": 1, "embedding": 1, "search": 1}
    assert len({r.json()["answer"] for r in responses}) == 1


def test_20_identical_streams_share_one_generation(
    scripted_app: tuple[str, Settings, ScriptedLLM],
) -> None:
    url, _, _ = scripted_app
    llm_before = calls(url)["llm"]
    body = {"query": "slow: what does single-flight do for streams?"}
    responses = asyncio.run(_gather(20, lambda c: c.post(f"{url}/ask/stream", json=body)))
    texts = set()
    for r in responses:
        events = parse(r.text)
        assert events[-1][0] == "done", events[-1]
        texts.add("".join(d["text"] for n, d in events if n == "token"))
    assert texts == {"".join(WORDS * 6)}
    assert calls(url)["llm"] - llm_before == 1


def test_a_failed_leader_fails_every_follower_and_caches_nothing(
    scripted_app: tuple[str, Settings, ScriptedLLM],
) -> None:
    url, settings, llm = scripted_app
    llm_before = llm.calls
    body = {"query": "slow break: does everybody get the error?"}
    responses = asyncio.run(_gather(10, lambda c: c.post(f"{url}/ask/stream", json=body)))
    for r in responses:
        assert parse(r.text)[-1][0] == "error"
    assert llm.calls - llm_before == 1
    answer_keys = [k for k in keys_of(settings.redis_url, settings.namespace) if ":llm:" in k]
    assert all("does everybody" not in k for k in answer_keys)
    r = httpx.post(f"{url}/ask", json=body, timeout=60)
    assert r.status_code == 502  # still failing, and tried anew: nothing was cached
    assert llm.calls - llm_before == 2


# -- across processes, with the real local LLM ---------------------------------------------


@pytest.fixture
def two_processes(
    tmp_path: Path, valkey_url: str, llm_base_url: str, embedder: SentenceTransformerEmbedder
) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    env = {
        "RAG_NAMESPACE": f"two-{uuid.uuid4().hex[:8]}",
        "RAG_REDIS_URL": valkey_url,
        "RAG_LLM_BASE_URL": llm_base_url,
        "RAG_LLM_MAX_TOKENS": "120",
        "RAG_LLM_STOP": "[]",  # a long answer: the leader is killed in the middle of it
        "RAG_FLIGHT_LOCK_TTL_S": "2",
        # As for scripted_app: these tests count coordination through Redis, which a 250 ms
        # deadline tripped by a loaded machine (the local LLM on every core) turns off; and a
        # follower in the other process gives up flight_wait_s after it started waiting, even
        # while pieces arrive, which a CPU-bound 120-token answer can take on a shared machine.
        "RAG_REDIS_TIMEOUT_S": "2",
        "RAG_FLIGHT_WAIT_S": "600",
    }
    other, other_url = start_app_process(env, tmp_path / "other")
    settings = Settings(
        namespace=env["RAG_NAMESPACE"],
        data_dir=tmp_path / "this",
        redis_url=valkey_url,
        llm_base_url=llm_base_url,
        llm_max_tokens=120,
        llm_stop=[],
        flight_lock_ttl_s=2,
        redis_timeout_s=2.0,
        flight_wait_s=600,
        seed_sample_corpus=True,
    )
    try:
        with serve(create_app(settings, embedder=embedder)) as url:
            yield url, other_url, other
    finally:
        other.kill()
        other.wait(timeout=30)


def test_two_processes_on_one_redis_make_one_llm_call(two_processes: tuple[str, str, Any]) -> None:
    url, other_url, _ = two_processes
    question = {"query": "What happens when two processes get the same question at once?"}

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(
                *(client.post(f"{u}/ask", json=question) for u in (url, other_url) * 5)
            )

    responses = asyncio.run(both())
    assert all(r.status_code == 200 for r in responses), [
        (r.status_code, r.text) for r in responses
    ]
    assert len({r.json()["answer"] for r in responses}) == 1
    assert calls(url)["llm"] + calls(other_url)["llm"] == 1


def test_a_killed_leader_is_taken_over_and_the_answer_arrives(
    two_processes: tuple[str, str, Any],
) -> None:
    url, other_url, other = two_processes
    question = {"query": "Tell me everything about how the caches, keys and TTLs work."}
    with httpx.stream("POST", f"{other_url}/ask/stream", json=question, timeout=120) as leader:
        lines = leader.iter_lines()
        while not next(lines).startswith("event: token"):
            pass  # the other process now holds the lock and is generating

        async def follow() -> httpx.Response:
            async with httpx.AsyncClient(timeout=120) as client:
                task = asyncio.create_task(client.post(f"{url}/ask", json=question))
                await asyncio.sleep(0.3)  # let it join as a follower
                other.send_signal(signal.SIGKILL)
                return await task

        response = asyncio.run(follow())
    assert response.status_code == 200, response.text
    assert response.json()["answer"].strip()
    assert calls(url)["llm"] == 1  # it took over and generated itself


def test_a_follower_that_disconnects_does_not_disturb_the_others(
    scripted_app: tuple[str, Settings, ScriptedLLM],
) -> None:
    url, _, llm = scripted_app
    llm_before = llm.calls
    body = {"query": "slow: can one listener leave early?"}

    async def run() -> list[str]:
        async with httpx.AsyncClient(timeout=60) as client:

            async def full() -> str:
                r = await client.post(f"{url}/ask/stream", json=body)
                events = parse(r.text)
                assert events[-1][0] == "done", events[-1]
                return "".join(d["text"] for n, d in events if n == "token")

            async def leave_early() -> None:
                async with client.stream("POST", f"{url}/ask/stream", json=body) as r:
                    tokens = 0
                    async for line in r.aiter_lines():
                        tokens += line.startswith("event: token")
                        if tokens == 2:
                            return  # closes this connection mid-answer

            leader = asyncio.create_task(full())
            await asyncio.sleep(0.5)  # the others join as followers
            results = await asyncio.gather(full(), leave_early(), full(), leader)
            return [r for r in results if r is not None]

    texts = asyncio.run(run())
    assert texts == ["".join(WORDS * 6)] * 3
    assert llm.calls - llm_before == 1
