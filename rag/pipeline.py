"""The question-answering pipeline: embed → search → generate, each stage behind its cache.

- An exact repeat costs one Redis round trip: one MGET of the corpus version, the embedding, the
  search result and the answer (keys guessed from earlier requests, then verified).
- On an exact answer miss the semantic cache may serve a similar question's answer.
- Identical concurrent misses share one embedding, one search and one generation
  (``SingleFlight``, ``AnswerRelay``); stale entries are served and refreshed once in the
  background (stale-while-revalidate).
- An answer is cached only after the model finished normally; a consumer that stops early
  (client disconnect) or an upstream error stores nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from rag.cache.codec import CorruptEntryError
from rag.cache.flight import SingleFlight
from rag.cache.layers import (
    AnswerCache,
    Cached,
    CorpusVersion,
    EmbeddingCache,
    SearchResultCache,
)
from rag.cache.relay import AnswerRelay
from rag.cache.tags import TagIndex
from rag.errors import InvalidInputError, LLMError
from rag.metrics import Metrics
from rag.prices import ModelPrice
from rag.prompt import build_messages
from rag.protocols import Embedder, Generator, KVStore, Retriever, Vector
from rag.semantic.cache import SemanticCache
from rag.types import (
    Answer,
    AskOptions,
    CacheMode,
    CacheStatus,
    Completion,
    LayerStatuses,
    ScoredChunk,
    SemanticInfo,
    Usage,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_CACHEABLE_FINISH = {"stop", "length"}  # "length": cut at max_tokens, which is in the key
_MAX_HINTS = 10_000  # answer-key hints and slid keys kept in memory (short strings each)


@dataclass(slots=True)
class StreamStart:
    """First event of a stream: cache statuses of all layers and the sources."""

    cache: LayerStatuses
    sources: list[ScoredChunk]
    semantic: SemanticInfo | None = None


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


@dataclass(slots=True, kw_only=True)
class _Plan:
    """A request after retrieval and the answer-cache lookup."""

    query: str
    options: AskOptions
    timer: _Timer
    statuses: LayerStatuses
    sources: list[ScoredChunk]
    key: str
    cached: Completion | None
    vector: Vector | None  # the query's, when it was needed (the semantic layer needs it)
    semantic_scope: str | None  # set when the semantic layer is on for this request
    semantic: SemanticInfo | None = None  # set on a semantic hit
    generated: bool = False  # this request ran the LLM (rather than following another's run)


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
        semantic: SemanticCache | None = None,
        semantic_by_default: bool = False,
        flight: SingleFlight | None = None,
        relay: AnswerRelay | None = None,
        sliding_embedding_ttl: bool = False,
        tags: TagIndex | None = None,
        price: ModelPrice | None = None,
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
        self.semantic = semantic
        self._semantic_by_default = semantic_by_default
        # Coalescing of identical misses (embedding, search) and generations; None: none.
        self.flight = flight
        self.relay = relay
        self._sliding_embedding_ttl = sliding_embedding_ttl  # a read extends the entry's TTL
        self.tags = tags  # answers are tagged with their source documents
        self._price = price or ModelPrice()  # what a cache hit saves
        self._refreshing: set[str] = set()  # keys being refreshed in the background
        self._slid: OrderedDict[str, float] = OrderedDict()  # key -> when its TTL was extended
        self._background: set[asyncio.Task[Any]] = set()
        # Guesses that let an exact repeat fetch all its entries in one round trip: the corpus
        # version last seen, and which answer key a search key led to. A guess only chooses what
        # to prefetch; every key used is recomputed from what was fetched, and a wrong guess
        # costs one more round trip, never a wrong entry.
        self._last_version: str | None = None
        self._answer_key_hints: OrderedDict[str, str] = OrderedDict()

    async def answer(self, query: str, options: AskOptions) -> Answer:
        """The whole answer at once. Generated through the same streaming path as ``stream``, so
        an answer cached here replays as the model's original pieces."""
        plan = await self._plan(query, options)
        usage = Usage()  # tokens spent by this request: none when the answer is cached
        timings_ms: dict[str, float] | None = None
        if plan.cached is not None:
            text = plan.cached.text
        else:
            pieces: list[str] = []
            async for item in self._generate(plan, live=False):
                if isinstance(item, StreamToken):
                    pieces.append(item.text)
                else:
                    # the stream's end already finished the timer; finishing it again would
                    # count this request twice in rag_stage_seconds{stage="total"}
                    usage, timings_ms = item.usage, item.timings_ms
            text = "".join(pieces)
        return Answer(
            text=text,
            sources=plan.sources,
            cache=plan.statuses,
            usage=usage,
            timings_ms=timings_ms if timings_ms is not None else plan.timer.finish(),
            semantic=plan.semantic,
        )

    async def stream(self, query: str, options: AskOptions) -> AsyncGenerator[StreamEvent, None]:
        """``StreamStart``, then ``StreamToken``s (live, or the cached answer's original pieces),
        then ``StreamEnd``. Raises ``RagError`` subclasses; after ``StreamStart`` only
        ``UpstreamError``s."""
        plan = await self._plan(query, options)
        yield StreamStart(cache=plan.statuses, sources=plan.sources, semantic=plan.semantic)
        if plan.cached is not None:
            for piece in plan.cached.pieces:
                yield StreamToken(piece)
            yield StreamEnd(cache=plan.statuses, usage=Usage(), timings_ms=plan.timer.finish())
            return
        async for item in self._generate(plan, live=True):
            yield item

    async def _plan(self, query: str, options: AskOptions) -> _Plan:
        """Validate, retrieve (through the embedding and search caches), look up the answer in
        the exact cache and then, on a miss, in the semantic cache."""
        self.validate(query, options)
        mode = options.mode
        timer = _Timer(self.metrics)
        statuses = LayerStatuses()
        started = time.perf_counter()
        fetched = await self._prefetch(query, options.top_k, mode)
        timer.record("cache_lookup", started)
        sources, search_key, vector, version = await self._retrieve(
            query, options.top_k, mode, statuses, timer, fetched
        )
        key = self._answer_cache.key(query, sources)
        if search_key is not None:
            self._remember_answer_key(search_key, key)
        entry = await self._cached_answer(key, mode, statuses, fetched)
        cached = entry.value if entry is not None else None
        plan = _Plan(
            query=query,
            options=options,
            timer=timer,
            statuses=statuses,
            sources=sources,
            key=key,
            cached=cached,
            vector=vector,
            semantic_scope=None,
        )
        if entry is not None and entry.stale and mode.writes:
            self._refresh(key, lambda: self._refresh_answer(plan))
        use_semantic = self._semantic_by_default if options.semantic is None else options.semantic
        if self.semantic is not None and use_semantic and version is not None:
            plan.semantic_scope = self.semantic.scope(version)
            if cached is None and mode.reads:
                await self._semantic_lookup(plan)
        self.metrics.record_cache("llm", statuses.llm)
        if plan.cached is not None:
            usage = plan.cached.usage
            self.metrics.tokens_saved.inc(usage.prompt_tokens + usage.completion_tokens)
            self.metrics.cost_saved.inc(self._price.cost(usage))
        return plan

    async def _semantic_lookup(self, plan: _Plan) -> None:
        assert self.semantic is not None and plan.semantic_scope is not None
        if plan.vector is None:
            plan.vector = await self._embed(
                plan.query, write=plan.options.mode.writes, timer=plan.timer
            )
        started = time.perf_counter()
        match = await self.semantic.lookup(
            scope=plan.semantic_scope,
            query=plan.query,
            vector=plan.vector,
            threshold=plan.options.threshold,
        )
        plan.timer.record("semantic_lookup", started)
        if match is not None:
            plan.cached = match.completion
            plan.sources = match.sources
            plan.statuses.llm = CacheStatus.SEMANTIC
            plan.semantic = SemanticInfo(
                similarity=round(match.similarity, 4), matched_query=match.matched_query
            )

    async def _prefetch(self, query: str, k: int, mode: CacheMode) -> dict[str, bytes | None]:
        """One round trip for the corpus version and, when reading, the entries this request
        will probably need."""
        keys = [self._corpus_version.key]
        if mode.reads:
            keys.append(self._embedding_cache.key(query))
            if self._last_version is not None:
                search_key = self._search_cache.key(query, corpus_version=self._last_version, k=k)
                keys.append(search_key)
                if (answer_key := self._answer_key_hints.get(search_key)) is not None:
                    keys.append(answer_key)
        return dict(zip(keys, await self._store.get_many(keys), strict=True))

    async def _lookup(self, key: str, fetched: dict[str, bytes | None]) -> bytes | None:
        if key in fetched:
            return fetched[key]
        (raw,) = await self._store.get_many([key])
        return raw

    def _remember_answer_key(self, search_key: str, answer_key: str) -> None:
        self._answer_key_hints[search_key] = answer_key
        self._answer_key_hints.move_to_end(search_key)
        if len(self._answer_key_hints) > _MAX_HINTS:
            self._answer_key_hints.popitem(last=False)

    async def _generate(self, plan: _Plan, *, live: bool) -> AsyncIterator[StreamToken | StreamEnd]:
        """A fresh answer, generated once however many identical requests want it: this request
        either runs the LLM or follows the run of an identical one (see ``AnswerRelay``)."""
        started = time.perf_counter()
        completion: Completion | None = None
        if self.relay is not None and self._store.available:
            source = self.relay.relay(plan.key, lambda: self._produce(plan), live=live)
        else:
            source = self._produce(plan)
        async for item in source:
            if isinstance(item, Completion):
                completion = item
            else:
                yield StreamToken(item)
        plan.timer.record("llm", started)
        if completion is None:  # pragma: no cover - relay and Generator contract
            raise LLMError("the LLM stream ended without finishing")
        usage = completion.usage if plan.generated else Usage()
        yield StreamEnd(cache=plan.statuses, usage=usage, timings_ms=plan.timer.finish())

    async def _produce(self, plan: _Plan) -> AsyncIterator[str | Completion]:
        """Run the LLM; store the answer only once the model finished and every piece was
        handed on (a consumer that stops early never reaches the write)."""
        plan.generated = True
        started = time.perf_counter()
        self.metrics.llm_calls.inc()
        completion: Completion | None = None
        async for item in self._generator.stream(build_messages(plan.query, plan.sources)):
            if isinstance(item, Completion):
                completion = item
            else:
                yield item
        if completion is None:  # pragma: no cover - Generator contract
            raise LLMError("the LLM stream ended without finishing")
        if not completion.text.strip():
            raise LLMError("the LLM returned an empty answer")
        if (
            plan.options.mode.writes
            and self._store.available
            and completion.finish_reason in _CACHEABLE_FINISH
        ):
            await self._answer_cache.put(
                plan.key, completion, compute_s=time.perf_counter() - started
            )
            entries = [plan.key]
            if self.semantic is not None and plan.semantic_scope is not None:
                if plan.vector is None:
                    plan.vector = await self._embed(plan.query, write=True, timer=plan.timer)
                semantic_key = await self.semantic.add(
                    scope=plan.semantic_scope,
                    query=plan.query,
                    vector=plan.vector,
                    answer_key=plan.key,
                    sources=plan.sources,
                )
                entries.append(semantic_key)
            if self.tags is not None:
                doc_tags = {f"doc:{s.chunk.doc_id}" for s in plan.sources}
                for entry_key in entries:
                    await self.tags.tag(entry_key, doc_tags, self._answer_cache.ttl_s)
        yield completion

    def validate(self, query: str, options: AskOptions) -> None:
        if not query.strip():
            raise InvalidInputError("query must not be empty")
        if len(query) > self._max_query_chars:
            raise InvalidInputError(f"query is longer than {self._max_query_chars} characters")
        if options.semantic and self.semantic is None:
            raise InvalidInputError("the semantic cache is not configured in this service")
        top_k = options.top_k
        if not 1 <= top_k <= self._max_top_k:
            raise InvalidInputError(f"top_k must be between 1 and {self._max_top_k}")

    async def _retrieve(
        self,
        query: str,
        k: int,
        mode: CacheMode,
        statuses: LayerStatuses,
        timer: _Timer,
        fetched: dict[str, bytes | None],
    ) -> tuple[list[ScoredChunk], str | None, Vector | None, str | None]:
        """The top-k chunks, the search key and corpus version (``None`` when the cache store is
        down), and the query vector when it was at hand."""
        search_key: str | None = None
        version: str | None = None
        if self._store.available:
            version = await self._corpus_version.resolve(fetched[self._corpus_version.key])
            self._last_version = version
            search_key = self._search_cache.key(query, corpus_version=version, k=k)

        hits: list[ScoredChunk] | None = None
        vector: Vector | None = None
        if search_key is None or not mode.reads:
            statuses.search = statuses.embedding = CacheStatus.BYPASS
        else:
            started = time.perf_counter()
            raw = await self._lookup(search_key, fetched)
            entry = await self._decode(raw, search_key, self._search_cache.decode)
            embedding_key = self._embedding_cache.key(query)
            vector = await self._decode(
                fetched[embedding_key], embedding_key, self._embedding_cache.decode
            )
            statuses.search = CacheStatus.HIT if entry is not None else CacheStatus.MISS
            statuses.embedding = CacheStatus.HIT if vector is not None else CacheStatus.MISS
            timer.record("cache_lookup", started)
            if vector is not None and self._sliding_embedding_ttl:
                self._slide(embedding_key, fetched[embedding_key])
            if entry is not None:
                hits = entry.value
                if entry.stale and mode.writes:
                    refresh_key = search_key
                    self._refresh(refresh_key, lambda: self._refresh_search(query, k, refresh_key))

        if hits is None:
            writes = mode.writes and search_key is not None
            if vector is None:
                vector = await self._embed(query, write=writes, timer=timer)
            query_vector = vector

            async def compute() -> list[ScoredChunk]:
                return await self._search(query_vector, k, search_key if writes else None, timer)

            async def read() -> list[ScoredChunk] | None:
                assert search_key is not None
                (raw,) = await self._store.get_many([search_key])
                found = await self._decode(raw, search_key, self._search_cache.decode)
                return found.value if found is not None else None

            hits = await (self._once(search_key, read, compute) if search_key else compute())

        self.metrics.record_cache("embedding", statuses.embedding)
        self.metrics.record_cache("search", statuses.search)
        return hits, search_key, vector, version

    async def _search(
        self, vector: Vector, k: int, key: str | None, timer: _Timer
    ) -> list[ScoredChunk]:
        """Query the vector DB; store the result under ``key`` unless it is ``None``."""
        started = time.perf_counter()
        self.metrics.search_calls.inc()
        found = await self._retriever.search(vector, k)
        timer.record("search", started)
        if key is not None:
            await self._search_cache.put(key, found, compute_s=time.perf_counter() - started)
        return found

    async def _refresh_search(self, query: str, k: int, key: str) -> None:
        timer = _Timer(self.metrics)
        vector = await self._embed(query, write=True, timer=timer)
        await self._search(vector, k, key, timer)

    async def _refresh_answer(self, plan: _Plan) -> None:
        fresh = replace(
            plan,
            options=replace(plan.options, mode=CacheMode.REFRESH),
            timer=_Timer(self.metrics),
            cached=None,
            generated=False,
        )
        async for _ in self._produce(fresh):
            pass

    def _refresh(self, key: str, refresh: Callable[[], Awaitable[None]]) -> None:
        """Stale-while-revalidate: recompute ``key`` in the background, once (in this process,
        and across processes when single-flight is on), while the stale value is served."""
        if key in self._refreshing:
            return
        self._refreshing.add(key)

        async def run() -> None:
            try:
                if self.flight is None:
                    await refresh()
                else:
                    await self.flight.once_in_a_while(key, refresh)
            except Exception as exc:  # a background refresh must never take the app down
                log.warning("background refresh of %s failed: %r", key, exc)
            finally:
                self._refreshing.discard(key)

        self._in_background(run())

    def _slide(self, key: str, raw: bytes | None) -> None:
        """Sliding TTL: a read extends the entry to its full TTL again, in the background and at
        most once per tenth of the TTL per key, so hot keys do not cost a write per read."""
        now = time.monotonic()
        ttl = self._embedding_cache.ttl_s
        if raw is None or now - self._slid.get(key, -math.inf) < ttl / 10:
            return
        self._slid[key] = now
        self._slid.move_to_end(key)
        if len(self._slid) > _MAX_HINTS:
            self._slid.popitem(last=False)
        self._in_background(self._store.set(key, raw, ttl))

    def _in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        """Cancel background refreshes (at shutdown)."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def _embed(self, query: str, *, write: bool, timer: _Timer) -> Vector:
        key = self._embedding_cache.key(query)

        async def compute() -> Vector:
            started = time.perf_counter()
            self.metrics.embedding_calls.inc()
            (vector,) = await self._embedder.embed([query])
            timer.record("embedding", started)
            if write:
                await self._embedding_cache.put(query, vector)
            return vector

        async def read() -> Vector | None:
            (raw,) = await self._store.get_many([key])
            return await self._decode(raw, key, self._embedding_cache.decode)

        return await self._once(key, read, compute)

    async def _once(
        self, key: str, read: Callable[[], Awaitable[T | None]], compute: Callable[[], Awaitable[T]]
    ) -> T:
        """``compute`` through single-flight when the cache store is there to coordinate."""
        if self.flight is None or not self._store.available:
            return await compute()
        return await self.flight.run(key, read, compute)

    async def _cached_answer(
        self, key: str, mode: CacheMode, statuses: LayerStatuses, fetched: dict[str, bytes | None]
    ) -> Cached[Completion] | None:
        if not (mode.reads and self._store.available):
            statuses.llm = CacheStatus.BYPASS
            return None
        raw = await self._lookup(key, fetched)
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
