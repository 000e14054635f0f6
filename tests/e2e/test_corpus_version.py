"""Never stale, whatever Redis does (issue #21): a document change acknowledged while Redis refuses
writes, or while it is down and then comes back from an older snapshot, is never answered from
the old text. The corpus version lives in the vector store, so no state of Redis can bring an old
one back. Each test runs an app on a private ``redis-server`` it breaks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from rag.embedding import SentenceTransformerEmbedder
from tests.conftest import ScriptedApp, serve_scripted
from tests.redis_servers import RedisServer, redis_server

QUESTION = "What colour is the office door?"
OLD = "The office door is painted bright red and opens inward."
NEW = "The office door is painted deep green and slides sideways."


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis") as s:
        yield s


def put_document(app: ScriptedApp, text: str) -> None:
    r = httpx.post(f"{app.url}/documents", json={"doc_id": "door", "text": text}, timeout=60)
    assert r.status_code == 201, r.text


def source_texts(app: ScriptedApp) -> tuple[dict[str, str], set[str]]:
    r = httpx.post(f"{app.url}/ask", json={"query": QUESTION, "top_k": 1}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    return body["cache"], {s["text"] for s in body["sources"]}


def cache_the_old_answer(app: ScriptedApp) -> None:
    put_document(app, OLD)
    assert source_texts(app)[1] == {OLD}
    cache, texts = source_texts(app)
    assert cache["search"] == "hit" and texts == {OLD}


def test_a_change_made_while_redis_refuses_writes_is_never_answered_stale(
    server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
) -> None:
    with serve_scripted(tmp_path_factory, embedder, server.url, "refused") as app:
        cache_the_old_answer(app)
        client = redis.Redis.from_url(server.url)
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")  # every write is refused from now on (OOM)
        try:
            put_document(app, NEW)  # acknowledged: the version is in the vector store
            for _ in range(5):
                assert source_texts(app)[1] == {NEW}
        finally:
            client.config_set("maxmemory", "0")
            client.close()


def test_a_change_made_while_redis_is_down_survives_a_restart_from_an_older_snapshot(
    server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
) -> None:
    with serve_scripted(tmp_path_factory, embedder, server.url, "rollback") as app:
        cache_the_old_answer(app)
        client = redis.Redis.from_url(server.url)
        client.save()  # the snapshot holds the old entries (and, on main, the old version)
        client.close()
        server.stop()
        put_document(app, NEW)  # acknowledged with Redis down
        assert source_texts(app)[1] == {NEW}
        server.start()  # loads dump.rdb from its folder: Redis rolled back
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # across the reconnection, never the old text
            assert source_texts(app)[1] == {NEW}
            time.sleep(0.2)
        assert source_texts(app)[0]["search"] == "hit"  # and caching resumed
