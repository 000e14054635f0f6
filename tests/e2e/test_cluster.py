"""The real app (local LLM, Qdrant local mode, MiniLM) on a 3-master Redis Cluster that the test
starts from ``redis-server`` on loopback ports: every layer misses then hits, replays stream,
tags and ``all`` invalidate across every primary, identical asks share one generation, semantic
entries reach a second app, sessions keep their turns; and the keys of a namespace spread over
every node rather than crowding one."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import httpx2
import pytest
import redis
from pydantic import ValidationError
from redis.cluster import RedisCluster

from rag.cache.keys import flight_key
from rag.cache.layers import INVALIDATION_TARGETS, REPORTED, TAG_SEGMENT
from rag.embedding import SentenceTransformerEmbedder
from rag.settings import Settings
from services.app import create_app
from tests.conftest import DOCS, adopt_corpus_version, serve
from tests.redis_servers import redis_cluster
from tests.sse import parse

ADMIN = {"Authorization": "Bearer cluster-admin-key"}
QUESTION = "What does the EXPIRE command do in Redis?"


@dataclass
class ClusterApp:
    url: str
    settings: Settings
    nodes: list[str]  # host:port of each primary
    llm_requests: list[str]
    client: RedisCluster

    def ask(self, query: str, **body: object) -> dict[str, object]:
        r = httpx.post(f"{self.url}/ask", json={"query": query, **body}, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def keys(self, layer: str = "") -> list[str]:
        prefix = f"rag:{self.settings.namespace}:{layer + ':' if layer else ''}"
        return sorted(k.decode() for k in self.client.scan_iter(match=prefix + "*", count=1000))

    def keys_per_node(self) -> dict[str, int]:
        counts = {}
        for node in self.nodes:
            host, port = node.split(":")
            plain = redis.Redis(host=host, port=int(port))
            counts[node] = sum(
                1 for _ in plain.scan_iter(match=f"rag:{self.settings.namespace}:*", count=1000)
            )
            plain.close()
        return counts


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as nodes:
        yield nodes


def cluster_settings(nodes: list[str], data_dir: Path, llm_base_url: str, ns: str) -> Settings:
    return Settings(
        namespace=ns,
        data_dir=data_dir,
        redis_url=f"redis://{nodes[1]}/0",  # any node will do
        redis_cluster=True,
        llm_base_url=llm_base_url,
        seed_sample_corpus=False,
        llm_max_tokens=32,
        admin_api_key="cluster-admin-key",  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def app(
    cluster: list[str],
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    llm_base_url: str,
) -> Iterator[ClusterApp]:
    requests: list[str] = []

    async def count(request: httpx2.Request) -> None:
        requests.append(request.url.path)

    settings = cluster_settings(
        cluster, tmp_path_factory.mktemp("cluster-app"), llm_base_url, f"cl-{uuid.uuid4().hex[:8]}"
    )
    application = create_app(
        settings,
        embedder=embedder,
        llm_http_client=httpx2.AsyncClient(event_hooks={"request": [count]}),
    )
    client = RedisCluster.from_url(f"redis://{cluster[0]}/0")
    with serve(application) as url:
        for doc_id, text in DOCS.items():
            r = httpx.post(
                f"{url}/documents",
                json={"doc_id": doc_id, "text": text},
                headers=ADMIN,
                timeout=60,
            )
            assert r.status_code == 201, r.text
        yield ClusterApp(
            url=url, settings=settings, nodes=cluster, llm_requests=requests, client=client
        )
    client.close()


def test_the_app_is_healthy_on_the_cluster(app: ClusterApp) -> None:
    health = httpx.get(f"{app.url}/healthz").json()
    assert health["status"] == "ok" and health["cache"] == "up"


def test_every_layer_misses_then_hits(app: ClusterApp) -> None:
    calls = len(app.llm_requests)
    first = app.ask(QUESTION)
    assert first["cache"] == {"embedding": "miss", "search": "miss", "llm": "miss"}
    assert len(app.llm_requests) == calls + 1
    second = app.ask(QUESTION)
    assert second["cache"] == {"embedding": "hit", "search": "hit", "llm": "hit"}
    assert second["answer"] == first["answer"] and second["sources"] == first["sources"]
    assert len(app.llm_requests) == calls + 1
    for segment in [layer.segment for layer in REPORTED]:
        assert app.keys(segment), f"no {segment} key on the cluster"


def test_keys_spread_over_every_primary(app: ClusterApp) -> None:
    for i in range(6):  # a few more entries: 3 per question at least
        app.ask(f"Which command sets a time to live? ({i})")
    counts = app.keys_per_node()
    assert all(n > 0 for n in counts.values()), counts


def test_a_cached_answer_replays_as_a_stream(app: ClusterApp) -> None:
    answer = app.ask(QUESTION)["answer"]
    r = httpx.post(f"{app.url}/ask/stream", json={"query": QUESTION}, timeout=120)
    events = parse(r.text)
    assert events[0][0] == "meta" and events[0][1]["cache"]["llm"] == "hit"
    tokens = [data["text"] for name, data in events if name == "token"]
    assert len(tokens) >= 2 and "".join(tokens) == answer
    assert events[-1][0] == "done"


def test_replacing_a_document_drops_its_tagged_answers(app: ClusterApp) -> None:
    question = "What does Qdrant store?"
    first = app.ask(question)
    assert any(s["doc_id"] == "qdrant-facts" for s in first["sources"])  # type: ignore[attr-defined]
    tag = f"rag:{app.settings.namespace}:tag:doc:qdrant-facts"
    tagged = [m.decode() for m in app.client.zrange(tag, 0, -1)]
    assert tagged and all(app.client.exists(k) for k in tagged)

    r = httpx.post(
        f"{app.url}/documents",
        json={"doc_id": "qdrant-facts", "text": DOCS["qdrant-facts"] + " It is written in Rust."},
        headers=ADMIN,
        timeout=60,
    )
    assert r.status_code == 201, r.text
    assert not any(app.client.exists(k) for k in tagged)  # on whichever node each one was
    assert not app.client.exists(tag)
    again = app.ask(question)
    assert again["cache"]["search"] == "miss" and again["cache"]["llm"] == "miss"


def test_invalidate_all_empties_the_namespace_on_every_node(app: ClusterApp) -> None:
    app.ask(QUESTION)
    assert sum(app.keys_per_node().values()) > 0
    r = httpx.post(f"{app.url}/cache/invalidate", json={"all": True}, headers=ADMIN, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["deleted"] > 0
    for segment in [*INVALIDATION_TARGETS.values(), TAG_SEGMENT]:  # every layer, sem, tags
        assert app.keys(segment) == [], segment
    again = app.ask(QUESTION)
    assert again["cache"] == {"embedding": "miss", "search": "miss", "llm": "miss"}


async def _concurrent_asks(url: str, query: str, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        return await asyncio.gather(
            *(client.post(f"{url}/ask", json={"query": query}) for _ in range(n))
        )


def test_identical_concurrent_asks_make_one_llm_call(app: ClusterApp) -> None:
    query = "How does Qdrant find the nearest vectors to a query?"
    calls = len(app.llm_requests)
    responses = asyncio.run(_concurrent_asks(app.url, query, 12))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert len(app.llm_requests) == calls + 1
    assert len({r.json()["answer"] for r in responses}) == 1
    # the flight's lock and live stream share a hash tag: one slot, one node
    answer_slots = {
        app.client.keyslot(flight_key(app.settings.namespace, "any key", part))
        for part in ("lock", "live", "refresh")
    }
    assert len(answer_slots) == 1


def test_semantic_entries_reach_a_second_app(
    app: ClusterApp,
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    llm_base_url: str,
) -> None:
    before = len(app.keys("sem"))  # the module's other questions have entries too ("on" mode)
    first = app.ask("How do I switch on the semantic cache?", cache={"semantic": True})
    assert first["cache"]["llm"] == "miss"  # type: ignore[index]
    assert len(app.keys("sem")) == before + 1
    settings = cluster_settings(
        app.nodes, tmp_path_factory.mktemp("cluster-app-2"), llm_base_url, app.settings.namespace
    )
    second = create_app(settings, embedder=embedder)
    with serve(second) as second_url:
        # one corpus: the second process follows the first's corpus version
        adopt_corpus_version(second, httpx.get(f"{app.url}/healthz").json()["corpus_version"])
        # the second app loads the index from every node at start (SCAN + MGET by slot) ...
        deadline = time.monotonic() + 10
        while httpx.get(f"{second_url}/stats").json()["semantic"]["entries"] < before + 1:
            assert time.monotonic() < deadline, "the second app did not load the semantic entry"
            time.sleep(0.1)
        # ... and hears of new entries by pub/sub
        app.ask("What does the EXPIRE command do?", cache={"semantic": True})
        deadline = time.monotonic() + 5
        while httpx.get(f"{second_url}/stats").json()["semantic"]["entries"] < before + 2:
            assert time.monotonic() < deadline, "the new semantic entry was not announced"
            time.sleep(0.1)
        r = httpx.post(
            f"{second_url}/ask",
            json={"query": "How can I switch on the semantic cache?", "cache": {"semantic": True}},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        assert r.json()["cache"]["llm"] == "semantic"
        assert r.json()["answer"] == first["answer"]


def test_a_session_keeps_its_turns(app: ClusterApp) -> None:
    sid = f"cluster-{uuid.uuid4().hex[:8]}"
    reply = app.ask(QUESTION, session_id=sid)
    view = httpx.get(f"{app.url}/sessions/{sid}").json()
    assert [t["question"] for t in view["turns"]] == [QUESTION]
    assert view["turns"][0]["answer"] == reply["answer"]
    assert 0 < view["ttl_s"] <= app.settings.session_ttl_s
    assert httpx.delete(f"{app.url}/sessions/{sid}").json()["deleted"] is True
    assert httpx.get(f"{app.url}/sessions/{sid}").status_code == 404


def test_cluster_mode_needs_a_url() -> None:
    with pytest.raises(ValidationError, match="redis_cluster needs redis_url"):
        Settings(redis_cluster=True)
