"""Parts for the unit tier: the real pipeline, built by the app's own ``build_pipeline``, over a
``MemoryStore`` or the embedded Valkey, with a deterministic embedder, a list retriever, and the
real ``OpenAIGenerator`` talking to the scripted OpenAI endpoint. Nothing here loads a model."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import openai
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from rag.cache.flight import SingleFlight
from rag.cache.gateway import RedisGateway
from rag.cache.layers import Models
from rag.cache.relay import AnswerRelay
from rag.corpus_version import CorpusState, CorpusVersion
from rag.errors import RetrievalError
from rag.generation import OpenAIGenerator
from rag.metrics import Metrics
from rag.pipeline import RagPipeline
from rag.prompt import PromptBuilder
from rag.protocols import Vector
from rag.settings import Settings
from rag.shedding import GenerationLimiter
from rag.tenant import Layers, Parts, build_pipeline
from rag.types import Chunk, ScoredChunk
from services.serving import free_port  # nothing listens there
from tests.memory_store import MemoryStore
from tests.scripted_llm import ScriptedLLM

DIMENSION = 8


class HashEmbedder:
    """A unit vector per text, from its sha256: equal texts, equal vectors."""

    model_id = "hash-embedder"
    dimension = DIMENSION

    def __init__(self) -> None:
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        self.calls += 1
        vectors = []
        for text in texts:
            raw = np.frombuffer(hashlib.sha256(text.encode()).digest()[:DIMENSION], np.uint8)
            vector = raw.astype(np.float32) - 127.5
            vectors.append(vector / np.linalg.norm(vector))
        return vectors


class ListRetriever:
    """Chunks in a list, ranked by dot product."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.chunks = [
            Chunk(
                doc_id=f"doc{i}",
                chunk_id=f"doc{i}#0",
                text=text,
                source=f"doc{i}.md",
                content_hash=hashlib.sha256(text.encode()).hexdigest(),
            )
            for i, text in enumerate(texts)
        ]
        self.calls = 0
        self.fail = False

    async def search(self, vector: Vector, k: int) -> list[ScoredChunk]:
        self.calls += 1
        return [ScoredChunk(c, 1.0 / (i + 1)) for i, c in enumerate(self.chunks[:k])]

    async def count(self, doc_id: str | None = None) -> int:
        return len([c for c in self.chunks if doc_id in (None, c.doc_id)])


class VersionStoreInMemory:
    """The ``VersionStore`` contract in memory; ``down`` plays a vector store that fails."""

    def __init__(self) -> None:
        self.state: CorpusState | None = None
        self.down = False
        self.reads = 0

    @property
    def version(self) -> str | None:
        return self.state.version if self.state else None

    async def read_state(self) -> CorpusState | None:
        self.reads += 1
        if self.down:
            raise RetrievalError("vector store down")
        return self.state

    async def write_state(self, state: CorpusState) -> None:
        if self.down:
            raise RetrievalError("vector store down")
        self.state = state


@dataclass
class Rig:
    """A pipeline over fakes, built by the production ``build_pipeline``, with handles on
    everything a test counts or breaks. ``store`` is a ``MemoryStore`` or a ``RedisGateway`` on
    the embedded Valkey (``backend``)."""

    pipeline: RagPipeline
    store: MemoryStore | RedisGateway
    namespace: str
    llm: ScriptedLLM
    embedder: HashEmbedder
    retriever: ListRetriever
    metrics: Metrics
    layers: Layers

    def count(self, layer: str, result: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "rag_cache_requests_total", {"layer": layer, "result": result}
        )
        return value or 0.0

    async def keys(self, segment: str = "") -> list[str]:
        """Live keys of this rig's namespace, those holding ``segment`` if given."""
        if isinstance(self.store, MemoryStore):
            found = self.store.live_keys()
        else:
            found = [k async for b in self.store.scan(f"rag:{self.namespace}:*") for k in b]
        return [k for k in found if segment in k]

    async def ttl(self, key: str) -> float | None:
        if isinstance(self.store, MemoryStore):
            return self.store.ttl(key)
        ttl = await self.store.client.ttl(key)
        return None if ttl < 0 else float(ttl)

    async def make_stale(self, key: str) -> None:
        """Rewrite the entry at ``key`` as past its soft TTL (same bytes otherwise)."""
        (raw,) = await self.store.get_many([key])
        assert raw is not None
        entry = json.loads(raw)
        entry["fresh_until"] = 1.0
        await self.store.set(key, json.dumps(entry).encode(), 3600)

    async def outage(self, down: bool) -> None:
        """Play a cache store that is down (reads miss, writes are dropped), as the store sees
        it once it noticed; or back, once it noticed that."""
        if isinstance(self.store, MemoryStore):
            self.store.down = down
            return
        self.store.client = self._dead if down else self._live
        while await self.store.ping() is down:  # Valkey: until the gateway's breaker agrees
            await asyncio.sleep(0.01)

    def __post_init__(self) -> None:
        if isinstance(self.store, RedisGateway):
            self._live = self.store.client
            self._dead = aioredis.Redis(  # refuses at once, as a stopped server does
                host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 0)
            )

    async def aclose(self) -> None:
        await self.pipeline.aclose()
        if isinstance(self.store, RedisGateway):
            self.store.client = self._live
            keys = await self.keys()
            if keys:
                await self._live.delete(*keys)
            await self._live.aclose()
            await self._dead.aclose()


def rig_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "max_top_k": 5,
        "max_query_chars": 200,
        "semantic_mode": "on",
        "embedding_sliding_ttl": False,
        "xfetch_beta": 0.0,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


def make_rig(
    store: MemoryStore | RedisGateway,
    *,
    soft_ttl_s: int | None = None,
    sliding: bool = False,
    flight: bool = True,
    limiter: GenerationLimiter | None = None,
) -> Rig:
    """A rig over ``store`` in a fresh namespace, built as the app builds a tenant."""
    namespace = f"unit-{uuid.uuid4().hex[:8]}"
    llm, metrics, embedder = ScriptedLLM(slow_s=0.02), Metrics(), HashEmbedder()
    retriever = ListRetriever(["Answers are cached for one hour.", "Embeddings for a week."])
    generator = OpenAIGenerator(
        client=openai.AsyncOpenAI(
            base_url="http://scripted.invalid/v1",
            api_key="x",
            max_retries=0,
            http_client=llm.client(),
        ),
        model_id="scripted",
        max_tokens=64,
        temperature=0.0,
    )
    version = CorpusVersion(
        store=VersionStoreInMemory(), redis=None, namespace=namespace, collection="docs", poll_s=1
    )
    version.current = "v0"  # as ``start`` leaves it
    soft = {"search_soft_ttl_s": soft_ttl_s, "llm_soft_ttl_s": soft_ttl_s} if soft_ttl_s else {}
    settings = rig_settings(embedding_sliding_ttl=sliding, **soft)
    parts = Parts(
        store=store,
        embedder=embedder,
        retriever=retriever,
        corpus_version=version,
        generator=generator,
        metrics=metrics,
        models=Models(
            embedding_id=embedder.model_id,
            dimension=DIMENSION,
            llm="scripted",
            sampling=generator.sampling,
            answer_prompt="p1",
            rewrite_prompt="r1",
        ),
        prompt=PromptBuilder(embedder, settings.context_sentences),
        limiter=limiter,
    )
    coalescing = (
        SingleFlight(store=None, namespace=namespace, lock_ttl_s=5, wait_s=5),
        AnswerRelay(store=None, namespace=namespace, lock_ttl_s=5, wait_s=5, stream_ttl_s=60),
    )
    pipeline, layers = build_pipeline(
        settings, namespace, parts, coalescing=coalescing if flight else None
    )
    return Rig(pipeline, store, namespace, llm, embedder, retriever, metrics, layers)
