"""The pipeline's stages (a *stage* is a step of the pipeline; a *layer* is what is cached, and
each stage reads and writes its layers through their ``CachedLayer``).

- ``RetrievalStage``: query → vector (embedding layer) → top-k chunks (search layer), keyed on
  the corpus version. Fetches everything an exact repeat needs in one round trip.
- ``AnswerStage``: (query, chunks) → answer (llm layer): generated once through the
  ``AnswerRelay``, stored only once the model finished normally, tagged with its documents and
  added to the semantic cache.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from rag.cache.aside import UNFETCHED, CachedLayer
from rag.cache.invalidation import Tags
from rag.cache.layers import AnswerLayer, Cached, EmbeddingLayer, SearchLayer
from rag.cache.relay import AnswerRelay
from rag.errors import LLMError
from rag.metrics import Metrics
from rag.prompt import PromptBuilder
from rag.protocols import Embedder, Generator, KVStore, Retriever, Vector
from rag.semantic.cache import SemanticCache
from rag.shedding import Admission, GenerationLimiter
from rag.types import CacheMode, CacheStatus, Completion, ScoredChunk, Usage

_CACHEABLE_FINISH = {"stop", "length"}  # "length": cut at max_tokens, which is in the key
_MAX_HINTS = 10_000  # answer-key hints kept in memory (short strings each)
Fetched = dict[str, bytes | None]


class Timer:
    """Per-request stage timings (``timings_ms``), also observed in ``rag_stage_seconds``."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.timings_ms: dict[str, float] = {}
        self._start = time.perf_counter()

    def record(self, stage: str, started: float) -> None:
        elapsed = time.perf_counter() - started
        self._metrics.observe_stage(stage, elapsed)
        self.timings_ms[stage] = round(self.timings_ms.get(stage, 0.0) + elapsed * 1000, 3)

    def finish(self) -> dict[str, float]:
        self.record("total", self._start)
        return self.timings_ms


@dataclass(frozen=True, slots=True)
class Retrieved:
    sources: list[ScoredChunk]
    version: str | None  # None: the cache store gave none, so nothing was cached by it
    search_key: str | None
    vector: Vector | None  # the query's, when it was at hand
    embedding: CacheStatus
    search: CacheStatus


class RetrievalStage:
    def __init__(
        self,
        *,
        embedder: Embedder,
        retriever: Retriever,
        embeddings: CachedLayer[EmbeddingLayer, Vector],
        searches: CachedLayer[SearchLayer, list[ScoredChunk]],
        metrics: Metrics,
        store: KVStore,
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._retriever = retriever
        self.embeddings = embeddings
        self.searches = searches
        self._metrics = metrics
        # A guess that lets an exact repeat fetch all its entries in one round trip: which answer
        # key a search key led to. It only chooses what to prefetch; a wrong one costs one more
        # GET, never a wrong entry.
        self._answer_keys: OrderedDict[str, str] = OrderedDict()

    def search_key(self, query: str, version: str, k: int) -> str:
        return self.searches.spec.key(query, corpus_version=version, k=k)

    def embedding_key(self, query: str) -> str:
        return self.embeddings.spec.key(query)

    async def prefetch(self, query: str, k: int, mode: CacheMode, version: str | None) -> Fetched:
        """One round trip, when reading, for the entries this request will probably need:
        embedding, search result (under ``version``) and answer."""
        if not mode.reads:
            return {}
        keys = [self.embedding_key(query)]
        if version is not None:
            keys.append(search_key := self.search_key(query, version, k))
            if (answer_key := self._answer_keys.get(search_key)) is not None:
                keys.append(answer_key)
        return dict(zip(keys, await self._store.get_many(keys), strict=True))

    def nothing_cached(self, query: str, fetched: Fetched) -> bool:
        """Whether the prefetch found none of this question's entries in a store that answered:
        a question never seen (or long expired), so without the semantic cache it is a miss."""
        return (
            self._store.available
            and self.embedding_key(query) in fetched
            and all(raw is None for raw in fetched.values())
        )

    def remember_answer_key(self, search_key: str, answer_key: str) -> None:
        self._answer_keys[search_key] = answer_key
        self._answer_keys.move_to_end(search_key)
        if len(self._answer_keys) > _MAX_HINTS:
            self._answer_keys.popitem(last=False)

    async def retrieve(
        self,
        query: str,
        k: int,
        *,
        mode: CacheMode,
        timer: Timer,
        fetched: Fetched,
        version: str | None,
    ) -> Retrieved:
        """Top-k chunks for ``query``, cached under the corpus ``version`` the request read once
        (None: the vector store never gave one, so nothing is cached by it)."""
        search_key = self.search_key(query, version, k) if version is not None else None
        emb_key = self.embedding_key(query)
        found: Cached[Vector] | None = None
        if search_key is None or not mode.reads:
            embedding = CacheStatus.BYPASS
            self.embeddings.record(embedding)
        else:  # reported whether or not the vector is needed: the search may hit
            raw = fetched.get(emb_key, UNFETCHED)
            found, embedding = await self.embeddings.lookup(emb_key, raw, refresh=None)
        vectors: list[Vector] = [found.value] if found is not None else []
        write_embedding = mode.writes and search_key is not None

        async def search() -> list[ScoredChunk]:
            if not vectors:
                vectors.append(await self.embed(query, timer=timer, write=write_embedding))
            started = time.perf_counter()
            self._metrics.search_calls.inc()
            hits = await self._retriever.search(vectors[0], k)
            timer.record("search", started)
            return hits

        raw_hits = fetched.get(search_key, UNFETCHED) if search_key else UNFETCHED
        sources, status = await self.searches.get_or_compute(
            search_key, search, mode=mode, raw=raw_hits
        )
        vector = vectors[0] if vectors else None
        return Retrieved(sources, version, search_key, vector, embedding, status)

    async def vector(self, query: str, *, timer: Timer, write: bool) -> Vector:
        """The query's vector when retrieval did not need it (the search was a hit): from the
        embedding cache if an identical request has written it meanwhile, else the model."""
        found = await self.embeddings.read(self.embedding_key(query)) if write else None
        if found is not None:
            return found.value
        return await self.embed(query, timer=timer, write=write)

    async def embed(self, query: str, *, timer: Timer, write: bool) -> Vector:
        """The query's vector from the model (once for identical concurrent requests)."""

        async def compute() -> Vector:
            started = time.perf_counter()
            self._metrics.embedding_calls.inc()
            (vector,) = await self._embedder.embed([query])
            timer.record("embedding", started)
            return vector

        return await (
            self.embeddings.compute(self.embedding_key(query), compute) if write else compute()
        )


@dataclass(frozen=True, slots=True)
class Job:
    """One answer to generate: the question, its sources, where it is cached."""

    query: str
    sources: list[ScoredChunk]
    key: str
    mode: CacheMode
    semantic_scope: str | None  # set: also add the answer to the semantic cache
    vector: Vector | None


class AnswerStage:
    def __init__(
        self,
        *,
        answers: CachedLayer[AnswerLayer, Completion],
        generator: Generator,
        prompt: PromptBuilder,
        metrics: Metrics,
        relay: AnswerRelay | None = None,
        tags: Tags | None = None,
        limiter: GenerationLimiter | None = None,
        semantic: SemanticCache | None = None,
    ) -> None:
        self._answers = answers
        self._limiter = limiter
        self._generator = generator
        self._prompt = prompt
        self._metrics = metrics
        self._relay = relay
        self._tags = tags
        self.semantic = semantic

    def key(self, query: str, sources: list[ScoredChunk]) -> str:
        return self._answers.spec.key(query, sources)

    def record(self, status: CacheStatus) -> None:
        """Count the answer's final status (known once the semantic lookup is done)."""
        self._answers.record(status)

    async def lookup(self, job: Job, fetched: Fetched) -> tuple[Completion | None, CacheStatus]:
        """The exact answer entry (not counted: see ``record``); a stale one is served and
        regenerated in the background."""
        if not job.mode.reads:
            return None, CacheStatus.BYPASS
        refresh = (lambda: self.regenerate(job)) if job.mode.writes else None
        raw = fetched.get(job.key, UNFETCHED)
        found, status = await self._answers.lookup(job.key, raw, refresh=refresh, count=False)
        return (found.value if found is not None else None), status

    def check_room(self) -> None:
        """``OverloadedError`` now if a new generation would be shed."""
        if self._limiter is not None:
            self._limiter.check()

    def admit(self, key: str) -> Admission | None:
        """A place among the generations allowed to run or wait (``OverloadedError`` when there
        is none); None when no place is needed: no limit, or an identical one is running."""
        if self._limiter is None or (self._relay is not None and self._relay.running(key)):
            return None
        return self._limiter.admit()

    async def generate(self, job: Job, *, live: bool) -> AsyncIterator[str | Completion]:
        """The answer's pieces, then its ``Completion`` with the usage *this* request spent
        (none when it shared another request's generation): generated once however many
        identical requests want it (``live``: pieces as they come)."""
        generated = False

        async def produce() -> AsyncIterator[str | Completion]:
            nonlocal generated
            generated = True
            async for item in self._produce(job):
                yield item

        source = self._relay.relay(job.key, produce, live=live) if self._relay else produce()
        async for item in source:
            if isinstance(item, Completion) and not generated:
                item = replace(item, usage=Usage())
            yield item

    async def regenerate(self, job: Job) -> Completion:
        """The answer generated again (and cached, as ``refresh`` does)."""
        completion = None
        async for item in self.generate(replace(job, mode=CacheMode.REFRESH), live=False):
            if isinstance(item, Completion):
                completion = item
        if completion is None:  # pragma: no cover - Generator contract
            raise LLMError("the LLM stream ended without finishing")
        return completion

    async def _produce(self, job: Job) -> AsyncIterator[str | Completion]:
        """Run the LLM; store the answer only once the model finished and every piece was
        handed on (a consumer that stops early never reaches the write)."""
        started = time.perf_counter()
        self._metrics.llm_calls.inc()
        completion: Completion | None = None
        async with self._slot(job.key):
            messages = await self._prompt.messages(job.query, job.sources, job.vector)
            async for item in self._generator.stream(messages):
                if isinstance(item, Completion):
                    completion = item
                else:
                    yield item
        if completion is None:  # pragma: no cover - Generator contract
            raise LLMError("the LLM stream ended without finishing")
        if not completion.text.strip():
            raise LLMError("the LLM returned an empty answer")
        if job.mode.writes and completion.finish_reason in _CACHEABLE_FINISH:
            await self._store_answer(job, completion, time.perf_counter() - started)
        yield completion

    def _slot(self, key: str) -> contextlib.AbstractAsyncContextManager[None]:
        """A running slot for the generation of ``key``; the more requests wait for it, the
        sooner it gets one."""
        if self._limiter is None:
            return contextlib.nullcontext()
        relay = self._relay
        return self._limiter.slot(lambda: relay.readers(key) if relay else 1)

    async def _store_answer(self, job: Job, completion: Completion, compute_s: float) -> None:
        if not await self._answers.write(job.key, completion, compute_s=compute_s):
            return
        entries = [job.key]
        semantic = self.semantic
        if semantic is not None and job.semantic_scope is not None and job.vector is not None:
            entries.append(
                await semantic.add(
                    scope=job.semantic_scope,
                    query=job.query,
                    vector=job.vector,
                    answer_key=job.key,
                    sources=job.sources,
                )
            )
        if self._tags is not None:
            doc_tags = {f"doc:{s.chunk.doc_id}" for s in job.sources}
            for entry_key in entries:
                await self._tags.tag(entry_key, doc_tags, self._answers.spec.ttl_s)

    async def aclose(self) -> None:
        if self._relay is not None:
            await self._relay.aclose()
