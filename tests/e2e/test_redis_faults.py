"""The app against private ``redis-server`` processes that the tests start, stop and restart:
Redis down at start-up, coming up, going away mid-run and restarted (answers never fail, the
cache resumes by itself, the background subscribers come back), and AUTH and TLS through
``RAG_REDIS_URL``. The LLM is scripted (fast and deterministic); the rest is real."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from rag.cache.gateway import RedisGateway, connect
from rag.embedding import SentenceTransformerEmbedder
from rag.settings import Settings
from tests.conftest import ScriptedApp, adopt_corpus_version, serve_scripted
from tests.redis_servers import RedisServer, redis_server
from tests.scripted_llm import WORDS
from tests.sse import parse

QUESTION = "How long are answers cached?"
BYPASS = {"embedding": "bypass", "search": "bypass", "llm": "bypass"}
HITS = {"embedding": "hit", "search": "hit", "llm": "hit"}


def ask(url: str, query: str = QUESTION, **cache: Any) -> dict[str, Any]:
    r = httpx.post(f"{url}/ask", json={"query": query, "cache": cache}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def health(url: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/healthz", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def eventually(check: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.1)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private server, not started yet."""
    with redis_server(tmp_path / "redis", start=False) as s:
        yield s


def test_down_at_start_then_up_then_down_again(
    server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
) -> None:
    with serve_scripted(tmp_path_factory, embedder, server.url, "down") as app:
        first = ask(app.url)
        assert first["cache"] == BYPASS and first["answer"]
        assert health(app.url)["status"] == "degraded" and health(app.url)["cache"] == "down"
        app.app.state.services.corpus.near.clear()  # this test follows Redis, not the copy

        server.start()
        eventually(lambda: health(app.url)["status"] == "ok", "Redis is seen up again")

        def cached() -> bool:
            return ask(app.url)["cache"] == HITS  # a miss first (stores), then hits

        eventually(cached, "caching resumed after Redis came up")
        stats = httpx.get(f"{app.url}/stats").json()
        # the asks above stopped at the first one that hit: its answer is the only hit so far
        assert stats["layers"]["llm"]["hit"] == 1
        eventually(
            lambda: httpx.get(f"{app.url}/stats").json()["semantic"]["synced"],
            "the semantic index synced",
        )

        # Redis goes away while requests are running: every one is still answered.
        statuses: list[int] = []
        stop = threading.Event()

        def load() -> None:
            i = 0
            while not stop.is_set():
                query = QUESTION if i % 2 else f"What is cached, part {i}?"
                r = httpx.post(f"{app.url}/ask", json={"query": query}, timeout=60)
                statuses.append(r.status_code)
                i += 1

        workers = [threading.Thread(target=load) for _ in range(4)]
        for worker in workers:
            worker.start()
        time.sleep(0.5)
        server.stop()
        time.sleep(1.5)
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
        assert statuses and set(statuses) == {200}, statuses
        assert ask(app.url, "A question after Redis went away?")["cache"] == BYPASS
        assert health(app.url)["status"] == "degraded"


def test_a_restarted_redis_is_used_at_once(
    server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
) -> None:
    """After a restart every pooled connection is dead. The first command on each one must not
    fail (that opened the breaker: a second without cache, once per dead connection, and under
    load those seconds sent hot questions to the LLM): it is sent again on a new connection."""
    server.start()
    with serve_scripted(tmp_path_factory, embedder, server.url, "restart-pool") as app:
        with ThreadPoolExecutor(8) as pool:  # eight connections in the pool
            list(pool.map(lambda i: ask(app.url, f"Question {i} before the restart?"), range(8)))
        server.stop()
        server.start()  # empty, same port
        after = [ask(app.url, f"Question {i} after the restart?")["cache"] for i in range(8)]
        assert all(statuses["llm"] == "miss" for statuses in after), after  # read, not bypassed
        assert ask(app.url, "Question 0 after the restart?")["cache"] == HITS


def subscribers(url: str, channel: str) -> int:
    client = redis.Redis.from_url(url, socket_timeout=1)
    try:
        return int(client.pubsub_numsub(channel)[0][1])
    except redis.RedisError:
        return 0
    finally:
        client.close()


def test_subscribers_come_back_after_a_restart(
    server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
) -> None:
    """Two app processes' worth of background tasks (semantic index sync and the single-flight
    listener, each a subscription) survive a Redis restart: afterwards a semantic entry one app
    adds reaches the other, which answers a paraphrase from it."""
    server.start()
    ns = f"restart-{uuid.uuid4().hex[:8]}"
    channels = [f"rag:{ns}:sem-events", f"rag:{ns}:flight-done"]
    with (
        serve_scripted(tmp_path_factory, embedder, server.url, "a", namespace=ns) as a,
        serve_scripted(tmp_path_factory, embedder, server.url, "b", namespace=ns) as b,
    ):
        adopt_corpus_version(b.app, health(a.url)["corpus_version"])  # one corpus, 2 processes
        for channel in channels:
            eventually(lambda c=channel: subscribers(server.url, c) == 2, f"2 on {channel}")
        ask(a.url)  # something cached before the restart

        server.stop()
        assert ask(a.url)["cache"] == HITS  # served from the near cache while Redis is away
        assert ask(a.url, "A question never asked before?")["cache"] == BYPASS
        server.start()  # empty: nothing is saved

        for channel in channels:
            eventually(
                lambda c=channel: subscribers(server.url, c) == 2,
                f"both apps subscribed again to {channel}",
                timeout_s=10,
            )
        for app in (a, b):
            eventually(lambda u=app.url: health(u)["status"] == "ok", f"{app.url} healthy")
            eventually(
                lambda u=app.url: httpx.get(f"{u}/stats").json()["semantic"]["synced"],
                f"{app.url} reloaded its semantic index",
                timeout_s=10,
            )
        # from here on b's index changes only by message: a's new entry must come by pub/sub

        first = ask(a.url, "How do I switch on the semantic cache?", semantic=True)
        assert first["cache"]["llm"] == "miss"
        eventually(
            lambda: httpx.get(f"{b.url}/stats").json()["semantic"]["entries"] == 1,
            "app b heard of app a's semantic entry",
        )
        calls = b.llm.calls
        second = ask(b.url, "How can I switch on the semantic cache?", semantic=True)
        assert second["cache"]["llm"] == "semantic" and second["answer"] == first["answer"]
        assert b.llm.calls == calls


# -- a garbage corpus version, a stalled Redis, a dead Redis ------------------------------


@pytest.fixture(scope="module")
def on_valkey(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder, valkey_url: str
) -> Iterator[ScriptedApp]:
    with serve_scripted(tmp_path_factory, embedder, valkey_url, "garbage") as app:
        yield app


SLOW = "slow: what does the cache do while Redis is away?"  # 42 words, 0.1 s apart


async def _identical(url: str, query: str, n: int) -> list[tuple[int, str, dict[str, Any]]]:
    """``n`` concurrent identical requests, alternately ``/ask`` and ``/ask/stream``: status,
    the whole answer text, and the cache statuses."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(i: int) -> tuple[int, str, dict[str, Any]]:
            if i % 2 == 0:
                r = await client.post(f"{url}/ask", json={"query": query})
                body = r.json()
                return r.status_code, body.get("answer", r.text), body.get("cache", {})
            r = await client.post(f"{url}/ask/stream", json={"query": query})
            events = parse(r.text)
            if events[-1][0] != "done":
                return 502, r.text, {}
            text = "".join(d["text"] for name, d in events if name == "token")
            return r.status_code, text, events[0][1]["cache"]

        return await asyncio.gather(*(one(i) for i in range(n)))


def test_identical_asks_while_redis_stalls_share_one_generation(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
) -> None:
    """Redis stops answering (``DEBUG SLEEP 2``, far past the 250 ms deadline) just before 5
    identical asks of a new question arrive: every one is answered, all with the same text, from
    one LLM call (coalesced in the process, with no Redis to coordinate through)."""
    with (
        redis_server(tmp_path / "redis", "--enable-debug-command", "yes") as server,
        serve_scripted(tmp_path_factory, embedder, server.url, "stall") as app,
    ):
        assert ask(app.url, "A question before the stall?")["cache"]["llm"] == "miss"
        calls = app.llm.calls
        sleeper = redis.Redis.from_url(server.url)
        stall = threading.Thread(target=sleeper.execute_command, args=("DEBUG", "SLEEP", "2"))
        stall.start()
        time.sleep(0.2)  # the server is asleep now
        results = asyncio.run(_identical(app.url, SLOW, 5))
        stall.join(timeout=10)
        sleeper.close()
        assert [status for status, _, _ in results] == [200] * 5, results
        assert {text for _, text, _ in results} == {"".join(WORDS * 6)}
        assert app.llm.calls - calls == 1
        assert all(cache["llm"] == "bypass" for _, _, cache in results)  # nothing was read


def test_with_redis_dead_identical_requests_make_one_llm_call(
    server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
) -> None:
    server.start()
    with serve_scripted(tmp_path_factory, embedder, server.url, "dead") as app:
        assert ask(app.url, "A question while Redis is up?")["cache"]["llm"] == "miss"
        server.stop()  # killed: connections refused from now on
        calls = app.llm.calls
        results = asyncio.run(_identical(app.url, SLOW, 8))
        assert [status for status, _, _ in results] == [200] * 8, results
        assert {text for _, text, _ in results} == {"".join(WORDS * 6)}
        assert all(cache == BYPASS for _, _, cache in results)
        assert app.llm.calls - calls == 1
        # and again, now that it is known to be down: still one call for the lot
        results = asyncio.run(_identical(app.url, SLOW + " again", 8))
        assert {(status, text) for status, text, _ in results} == {(200, "".join(WORDS * 6))}
        assert app.llm.calls - calls == 2


# -- AUTH and TLS through the URL ---------------------------------------------------------


def test_auth_through_the_url(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
) -> None:
    with redis_server(tmp_path / "redis", "--requirepass", "s3cret-pass") as server:
        good = f"redis://:s3cret-pass@127.0.0.1:{server.port}/0"
        with serve_scripted(tmp_path_factory, embedder, good, "auth") as app:
            _caches_through(app, good)

        wrong = f"redis://:wrong-pass@127.0.0.1:{server.port}/0"
        with serve_scripted(tmp_path_factory, embedder, wrong, "noauth") as app:
            assert ask(app.url)["cache"] == BYPASS
            assert ask(app.url, "Another question for a Redis that refuses us?")["cache"] == BYPASS
            assert health(app.url) | {"chunks": None, "corpus_version": None} == {
                "status": "degraded",
                "cache": "down",
                "vector_db": "up",
                "llm": "up",
                "chunks": None,
                "corpus_version": None,
            }


def _caches_through(app: ScriptedApp, url: str) -> None:
    """The app reached Redis at ``url``: a miss, then hits, health ok, its entries stored there."""
    assert ask(app.url)["cache"]["llm"] == "miss"
    assert ask(app.url)["cache"] == HITS
    assert health(app.url)["status"] == "ok"
    assert _keys(url, app.settings.namespace)


def _keys(url: str, namespace: str) -> list[bytes]:
    return list(redis.Redis.from_url(url).scan_iter(match=f"rag:{namespace}:*"))


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not on PATH to make test certificates")
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        folder / n for n in ("ca.key", "ca.pem", "s.key", "s.csr", "s.pem")
    )
    ext = folder / "san.cnf"
    ext.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
        "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(key), "-out", str(csr))  # fmt: skip
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return cert, key, ca


def _has_tls() -> bool:
    server = shutil.which("redis-server")
    if server is None:
        return False
    probe = subprocess.run(
        [server, "--port", "0", "--tls-port", "1", "--tls-cert-file", "/nonexistent"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return "Bad directive" not in probe.stdout + probe.stderr


async def _reachable(url: str, **overrides: Any) -> bool:
    settings = Settings(redis_url=url, **overrides)
    client = connect(settings)
    try:
        return await RedisGateway(client=client, timeout_s=2.0).ping()
    finally:
        await client.aclose()


async def test_tls_needs_the_ca(tmp_path: Path) -> None:
    if not _has_tls():
        pytest.skip("this redis-server is built without TLS")
    tls = _certificates(tmp_path / "certs")
    with redis_server(tmp_path / "redis", tls=tls) as server:
        ca = tls[2]
        assert await _reachable(f"{server.url}?ssl_ca_certs={ca}")
        assert not await _reachable(server.url)  # the system CAs do not know this one
        assert not await _reachable(server.url.replace("rediss://", "redis://"))


def test_tls_through_the_url(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
) -> None:
    if not _has_tls():
        pytest.skip("this redis-server is built without TLS")
    tls = _certificates(tmp_path / "certs")
    with redis_server(tmp_path / "redis", tls=tls) as server:
        url = f"{server.url}?ssl_ca_certs={tls[2]}"
        with serve_scripted(tmp_path_factory, embedder, url, "tls") as app:
            _caches_through(app, url)
