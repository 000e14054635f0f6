"""The question-answering pipeline: embed → search → generate, each stage behind its cache.

Round trips to the cache store for an exact repeat: one pipelined fetch of (corpus version,
embedding, search result under the last known corpus version), then one fetch of the answer.
A stream is cached only after the model finished normally; a consumer that stops early (client
disconnect) or an upstream error stores nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from rag.cache.codec import CorruptEntryError
from rag.cache.layers import AnswerCache, CorpusVersion, EmbeddingCache, SearchResultCache
from rag.errors import InvalidInputError, LLMError
from rag.metrics import Metrics
from rag.prompt import build_messages
from rag.protocols import Embedder, Generator, KVStore, Retriever, Vector
from rag.types import (
    Answer,
    CacheMode,
    CacheStatus,
    Completion,
    LayerStatuses,
    ScoredChunk,
    Usage,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_CACHEABLE_FINISH = {"stop", "length"}  # "length": cut at max_tokens, which is in the key


@dataclass(slots=True)
class StreamStart:
    """First event of a stream: cache statuses of all layers and the sources."""

    cache: LayerStatuses
    sources: list[ScoredChunk]


@dataclass(slots=True)
class StreamToken:
    text: str


@dataclass(slots=True)
class StreamEnd:
    cache: LayerStatuses
    usage: Usage
    timings_ms: dict[str, float] = field(default_factory=dict)


StreamEvent = StreamStart | StreamToken | StreamEnd


class _Timer:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.timings_ms: dict[str, float] = {}
        self._start = time.perf_counter()

    def record(self, stage: str, started: float) -> None:
        elapsed = time.perf_counter() - started
        self._metrics.stage_seconds.labels(stage).observe(elapsed)
        self.timings_ms[stage] = round(self.timings_ms.get(stage, 0.0) + elapsed * 1000, 3)

    def finish(self) -> dict[str, float]:
        self.record("total", self._start)
        return self.timings_ms


class RagPipeline:
    def __init__(
        self,
        *,
        embedder: Embedder,
        retriever: Retriever,
        generator: Generator,
        store: KVStore,
        embedding_cache: EmbeddingCache,
        search_cache: SearchResultCache,
        answer_cache: AnswerCache,
        corpus_version: CorpusVersion,
        metrics: Metrics,
        max_top_k: int,
        max_query_chars: int,
    ) -> None:
        self._embedder = embedder
        self._retriever = retriever
        self._generator = generator
        self._store = store
        self._embedding_cache = embedding_cache
        self._search_cache = search_cache
        self._answer_cache = answer_cache
        self._corpus_version = corpus_version
        self.metrics = metrics
        self._max_top_k = max_top_k
        self._max_query_chars = max_query_chars
        # Last corpus version seen: lets the search entry be fetched in the first round trip.
        # Always checked against the version fetched in that same round trip.
        self._last_version: str | None = None

    async def answer(self, query: str, *, top_k: int, mode: CacheMode = CacheMode.DEFAULT) -> Answer:
        """The whole answer at once (drains ``stream``, so both paths cache identically)."""
        pieces: list[str] = []
        sources: list[ScoredChunk] = []
        async for event in self.stream(query, top_k=top_k, mode=mode):
            if isinstance(event, StreamStart):
                sources = event.sources
            elif isinstance(event, StreamToken):
                pieces.append(event.text)
            else:
                return Answer(
                    text="".join(pieces),
                    sources=sources,
                    cache=event.cache,
                    usage=event.usage,
                    timings_ms=event.timings_ms,
                )
        raise LLMError("the answer stream ended without a result")  # pragma: no cover

    async def stream(
        self, query: str, *, top_k: int, mode: CacheMode = CacheMode.DEFAULT
    ) -> AsyncIterator[StreamEvent]:
        self._validate(query, top_k)
        timer = _Timer(self.metrics)
        statuses = LayerStatuses()
        sources = await self._retrieve(query, top_k, mode, statuses, timer)

        messages = build_messages(query, sources)
        key = self._answer_cache.key(query, sources)
        cached = await self._cached_answer(key, mode, statuses)
        self.metrics.record_cache("llm", statuses.llm)
        if cached is not None:
            self.metrics.tokens_saved.inc(cached.usage.prompt_tokens + cached.usage.completion_tokens)
            yield StreamStart(cache=statuses, sources=sources)
            for piece in cached.pieces:
                yield StreamToken(piece)
            yield StreamEnd(cache=statuses, usage=Usage(), timings_ms=timer.finish())
            return

        yield StreamStart(cache=statuses, sources=sources)
        started = time.perf_counter()
        self.metrics.llm_calls.inc()
        completion: Completion | None = None
        async for item in self._generator.stream(messages):
            if isinstance(item, Completion):
                completion = item
            else:
                yield StreamToken(item)
        timer.record("llm", started)
        if completion is None:  # pragma: no cover - Generator contract
            raise LLMError("the LLM stream ended without finishing")
        if not completion.text.strip():
            raise LLMError("the LLM returned an empty answer")
        # Only reached when the model finished and every token was handed to the consumer.
        if mode.writes and self._store.available and completion.finish_reason in _CACHEABLE_FINISH:
            await self._answer_cache.put(key, completion)
        yield StreamEnd(cache=statuses, usage=completion.usage, timings_ms=timer.finish())

    def _validate(self, query: str, top_k: int) -> None:
        if not query.strip():
            raise InvalidInputError("query must not be empty")
        if len(query) > self._max_query_chars:
            raise InvalidInputError(f"query is longer than {self._max_query_chars} characters")
        if not 1 <= top_k <= self._max_top_k:
            raise InvalidInputError(f"top_k must be between 1 and {self._max_top_k}")

    async def _retrieve(
        self, query: str, k: int, mode: CacheMode, statuses: LayerStatuses, timer: _Timer
    ) -> list[ScoredChunk]:
        started = time.perf_counter()
        keys = [self._corpus_version.key]
        prefetched_search_key = None
        if mode.reads:
            keys.append(self._embedding_cache.key(query))
            if self._last_version is not None:
                prefetched_search_key = self._search_cache.key(
                    query, corpus_version=self._last_version, k=k
                )
                keys.append(prefetched_search_key)
        raw = await self._store.get_many(keys)
        search_key: str | None = None
        if self._store.available:
            version = await self._corpus_version.resolve(raw[0])
            self._last_version = version
            search_key = self._search_cache.key(query, corpus_version=version, k=k)

        hits: list[ScoredChunk] | None = None
        vector: Vector | None = None
        if search_key is None or not mode.reads:
            statuses.search = statuses.embedding = CacheStatus.BYPASS
        else:
            if search_key == prefetched_search_key:
                search_raw = raw[2]
            else:  # first request, or the corpus changed since the last one
                (search_raw,) = await self._store.get_many([search_key])
            hits = await self._decode(search_raw, search_key, self._search_cache.decode)
            vector = await self._decode(raw[1], keys[1], self._embedding_cache.decode)
            statuses.search = CacheStatus.HIT if hits is not None else CacheStatus.MISS
            statuses.embedding = CacheStatus.HIT if vector is not None else CacheStatus.MISS
        timer.record("cache_lookup", started)

        if hits is None:
            writes = mode.writes and search_key is not None
            if vector is None:
                vector = await self._embed(query, write=writes, timer=timer)
            started = time.perf_counter()
            self.metrics.search_calls.inc()
            hits = await self._retriever.search(vector, k)
            timer.record("search", started)
            if writes and search_key is not None:
                await self._search_cache.put(search_key, hits)

        self.metrics.record_cache("embedding", statuses.embedding)
        self.metrics.record_cache("search", statuses.search)
        return hits

    async def _embed(self, query: str, *, write: bool, timer: _Timer) -> Vector:
        started = time.perf_counter()
        self.metrics.embedding_calls.inc()
        (vector,) = await self._embedder.embed([query])
        timer.record("embedding", started)
        if write:
            await self._embedding_cache.put(query, vector)
        return vector

    async def _cached_answer(
        self, key: str, mode: CacheMode, statuses: LayerStatuses
    ) -> Completion | None:
        if not (mode.reads and self._store.available):
            statuses.llm = CacheStatus.BYPASS
            return None
        (raw,) = await self._store.get_many([key])
        cached = await self._decode(raw, key, self._answer_cache.decode)
        if not self._store.available:
            statuses.llm = CacheStatus.BYPASS
        else:
            statuses.llm = CacheStatus.HIT if cached is not None else CacheStatus.MISS
        return cached

    async def _decode(self, raw: bytes | None, key: str, decode: Callable[[bytes], T]) -> T | None:
        """A cache value decoded, or ``None`` for absent; a corrupt value is deleted and a miss."""
        if raw is None:
            return None
        try:
            return decode(raw)
        except (CorruptEntryError, KeyError, TypeError, ValueError) as exc:
            log.warning("dropping corrupt cache entry %s: %s", key, exc)
            await self._store.delete(key)
            return None
