"""In-memory parts for the unit tier: the real pipeline and cache stages over a ``MemoryStore``,
a deterministic embedder, a list retriever, and the real ``OpenAIGenerator`` talking to the
scripted OpenAI endpoint. Nothing here starts a server or loads a model."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import openai

from rag.cache.flight import SingleFlight
from rag.cache.layers import AnswerCache, CorpusVersion, EmbeddingCache, SearchResultCache
from rag.cache.memory import MemoryStore
from rag.cache.relay import AnswerRelay
from rag.cache.stage import Background, CachedStage
from rag.generation import OpenAIGenerator
from rag.metrics import Metrics
from rag.pipeline import AskLimits, RagPipeline
from rag.protocols import Vector
from rag.shedding import GenerationLimiter
from rag.stages import AnswerLayer, CachedRetrieval
from rag.types import Chunk, ScoredChunk
from tests.scripted_llm import ScriptedLLM

DIMENSION = 8
NAMESPACE = "unit"


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

    async def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Vector]) -> None:
        raise NotImplementedError

    async def delete_document(self, doc_id: str) -> int:
        raise NotImplementedError

    async def count(self) -> int:
        return len(self.chunks)


@dataclass
class Rig:
    """A pipeline over fakes, with handles on everything a test counts or breaks."""

    pipeline: RagPipeline
    store: MemoryStore
    llm: ScriptedLLM
    embedder: HashEmbedder
    retriever: ListRetriever
    metrics: Metrics
    answers: AnswerCache
    searches: SearchResultCache
    embeddings: EmbeddingCache

    def count(self, layer: str, result: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "rag_cache_requests_total", {"layer": layer, "result": result}
        )
        return value or 0.0


def make_rig(
    *,
    soft_ttl_s: int | None = None,
    sliding: bool = False,
    flight: bool = True,
    limiter: GenerationLimiter | None = None,
) -> Rig:
    store, llm, metrics = MemoryStore(), ScriptedLLM(slow_s=0.02), Metrics()
    embedder = HashEmbedder()
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
    background = Background()
    single_flight = (
        SingleFlight(store=None, namespace=NAMESPACE, lock_ttl_s=5, wait_s=5) if flight else None
    )
    relay = AnswerRelay(store=None, namespace=NAMESPACE, lock_ttl_s=5, wait_s=5) if flight else None
    embeddings = EmbeddingCache(
        namespace=NAMESPACE, model_id=embedder.model_id, dimension=DIMENSION, ttl_s=3600
    )
    searches = SearchResultCache(
        namespace=NAMESPACE,
        embedding_model_id=embedder.model_id,
        collection="docs",
        ttl_s=3600,
        soft_ttl_s=soft_ttl_s,
    )
    answers = AnswerCache(
        namespace=NAMESPACE,
        llm_model="scripted",
        prompt_version="p1",
        sampling=generator.sampling,
        ttl_s=3600,
        soft_ttl_s=soft_ttl_s,
    )

    def stage(codec: object, **extra: bool) -> CachedStage:  # type: ignore[type-arg]
        return CachedStage(
            codec=codec,  # type: ignore[arg-type]
            store=store,
            metrics=metrics,
            background=background,
            flight=single_flight,
            **extra,
        )

    pipeline = RagPipeline(
        retrieval=CachedRetrieval(
            embedder=embedder,
            retriever=retriever,
            embeddings=stage(embeddings, sliding=sliding),
            searches=stage(searches),
            corpus_version=CorpusVersion(
                store=store, namespace=NAMESPACE, collection="docs", ttl_s=86400
            ),
            metrics=metrics,
            store=store,
        ),
        answers=AnswerLayer(
            answers=stage(answers),
            generator=generator,
            metrics=metrics,
            relay=relay,
            limiter=limiter,
            store=store,
        ),
        metrics=metrics,
        limits=AskLimits(max_top_k=5, max_query_chars=200),
        background=background,
    )
    return Rig(pipeline, store, llm, embedder, retriever, metrics, answers, searches, embeddings)
