"""One tenant: what one API key (or everyone, when no keys are set) asks through, built from the
settings over the shared corpus, LLM, semantic rule, limiter and metrics. Every cache layer is a
``CachedStage`` over one fail-open ``RedisStore``; the session store is strict."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rag.cache.flight import SingleFlight
from rag.cache.layers import AnswerCache, EmbeddingCache, RewriteCache, SearchResultCache
from rag.cache.relay import AnswerRelay
from rag.cache.stage import Background, CachedStage
from rag.cache.store import RedisStore, StrictStore
from rag.cache.tags import TagIndex
from rag.generation import OpenAIGenerator
from rag.metrics import Metrics
from rag.pipeline import AskLimits, RagPipeline
from rag.prices import ModelPrice
from rag.prompt import prompt_version
from rag.semantic.cache import SemanticCache
from rag.semantic.index import SemanticIndex
from rag.semantic.rule import SemanticRule
from rag.sessions import Conversations, QuestionRewriter, SessionStore, rewrite_version
from rag.settings import Settings
from rag.shedding import GenerationLimiter, TokenBucket
from rag.stages import AnswerLayer, CachedRetrieval

if TYPE_CHECKING:
    from rag.wiring import Corpus


@dataclass(frozen=True, kw_only=True)
class Tenant:
    """What one API key (or everyone, when no keys are set) asks through: its own cache entries,
    exact and semantic, and sessions, under its own key namespace."""

    namespace: str
    pipeline: RagPipeline
    conversations: Conversations
    invalidation: TagIndex  # deletes this tenant's entries by layer
    rate: TokenBucket | None = None  # its request rate, when RAG_TENANT_RATE_PER_S is set


@dataclass(frozen=True, kw_only=True)
class Shared:
    """What every tenant uses as it is: built once, not once per tenant."""

    generator: OpenAIGenerator
    metrics: Metrics
    rule: SemanticRule
    price: ModelPrice
    limiter: GenerationLimiter  # one bound on generations for the whole process


async def open_tenant(
    stack: AsyncExitStack, settings: Settings, corpus: Corpus, shared: Shared, ns: str
) -> Tenant:
    """One tenant's caches (all under the key namespace ``ns``), pipeline and conversations, over
    the shared corpus, LLM, semantic rule and metrics. Background tasks and clean-ups go on
    ``stack``."""
    store, generator = corpus.store, shared.generator
    flight, relay = (
        _coalescing(stack, settings, store, ns) if settings.single_flight else (None, None)
    )
    background = Background()

    def stage(codec: Any, *, sliding: bool = False) -> CachedStage[Any]:
        """Every layer: one mechanism over the same store, metrics and coalescing."""
        return CachedStage(
            codec=codec, store=store, metrics=shared.metrics, background=background,
            flight=flight, sliding=sliding,
        )  # fmt: skip

    answer_cache = _answer_cache(settings, ns, generator)
    semantic = _semantic_cache(stack, settings, corpus, shared, ns, answer_cache)
    retrieval = CachedRetrieval(
        embedder=corpus.embedder,
        retriever=corpus.retriever,
        embeddings=stage(
            _embedding_cache(settings, corpus, ns), sliding=settings.embedding_sliding_ttl
        ),
        searches=stage(_search_cache(settings, corpus, ns)),
        corpus_version=corpus.corpus_version,
        metrics=shared.metrics,
        store=store,
    )
    answers = AnswerLayer(
        answers=stage(answer_cache),
        generator=generator,
        metrics=shared.metrics,
        relay=relay,
        tags=corpus.tags,
        limiter=shared.limiter,
        store=store,
    )
    pipeline = RagPipeline(
        retrieval=retrieval,
        answers=answers,
        metrics=shared.metrics,
        limits=AskLimits(settings.max_top_k, settings.max_query_chars, settings.semantic_enabled),
        background=background,
        semantic=semantic,
        price=shared.price,
    )
    stack.push_async_callback(pipeline.aclose)
    conversations = _conversations(
        settings, corpus, shared, ns, stage(_rewrite_cache(settings, ns, generator))
    )
    invalidation = TagIndex(store=store, namespace=ns)
    rate = settings.tenant_rate_per_s
    return Tenant(
        namespace=ns,
        pipeline=pipeline,
        conversations=conversations,
        invalidation=invalidation,
        rate=TokenBucket(rate_per_s=rate, burst=settings.tenant_burst) if rate else None,
    )


def _conversations(
    settings: Settings, corpus: Corpus, shared: Shared, ns: str, rewrites: CachedStage[str]
) -> Conversations:
    return Conversations(
        sessions=SessionStore(
            store=StrictStore(client=corpus.redis, timeout_s=settings.redis_timeout_s),
            namespace=ns,
            ttl_s=settings.session_ttl_s,
            history_tokens=settings.session_history_tokens,
            encoding=corpus.encoding,
        ),
        rewriter=QuestionRewriter(
            generator=shared.generator,
            rewrites=rewrites,
            metrics=shared.metrics,
            max_chars=settings.max_query_chars,
        ),
    )


def _rewrite_cache(settings: Settings, ns: str, generator: OpenAIGenerator) -> RewriteCache:
    return RewriteCache(
        namespace=ns,
        llm_model=settings.llm_model,
        prompt_version=rewrite_version(),
        sampling=generator.sampling,
        ttl_s=settings.llm_ttl_s,
    )


def _coalescing(
    stack: AsyncExitStack, settings: Settings, store: RedisStore, ns: str
) -> tuple[SingleFlight, AnswerRelay]:
    """Single-flight for the cached stages and the relay for answers; in this process first,
    across processes through Redis."""
    flight = SingleFlight(
        store=store,
        namespace=ns,
        lock_ttl_s=settings.flight_lock_ttl_s,
        wait_s=settings.flight_wait_s,
    )
    relay = AnswerRelay(
        store=store,
        namespace=ns,
        # a blocking read must end before the client's socket timeout does
        poll_s=min(0.5, 0.5 * settings.redis_timeout_s),
        lock_ttl_s=settings.flight_lock_ttl_s,
        wait_s=settings.flight_wait_s,
    )
    listener = asyncio.create_task(flight.run_listener(), name="single-flight-listener")
    stack.push_async_callback(_cancel, listener)
    return flight, relay


def _embedding_cache(settings: Settings, corpus: Corpus, ns: str) -> EmbeddingCache:
    return EmbeddingCache(
        namespace=ns,
        model_id=corpus.embedder.model_id,
        dimension=corpus.embedder.dimension,
        ttl_s=settings.embedding_ttl_s,
    )


def _search_cache(settings: Settings, corpus: Corpus, ns: str) -> SearchResultCache:
    return SearchResultCache(
        namespace=ns,
        embedding_model_id=corpus.embedder.model_id,
        collection=settings.collection,
        ttl_s=settings.search_ttl_s,
        soft_ttl_s=min(settings.search_soft_ttl_s, settings.search_ttl_s),
        xfetch_beta=settings.xfetch_beta,
    )


def _answer_cache(settings: Settings, ns: str, generator: OpenAIGenerator) -> AnswerCache:
    return AnswerCache(
        namespace=ns,
        llm_model=settings.llm_model,
        prompt_version=prompt_version(),
        sampling=generator.sampling,
        ttl_s=settings.llm_ttl_s,
        soft_ttl_s=min(settings.llm_soft_ttl_s, settings.llm_ttl_s),
        xfetch_beta=settings.xfetch_beta,
    )


def _semantic_cache(
    stack: AsyncExitStack,
    settings: Settings,
    corpus: Corpus,
    shared: Shared,
    ns: str,
    answer_cache: AnswerCache,
) -> SemanticCache:
    """The tenant's semantic cache, its index kept in sync in the background."""
    semantic = SemanticCache(
        store=corpus.store,
        namespace=ns,
        rule=shared.rule,
        index=SemanticIndex(
            dimension=corpus.embedder.dimension, max_entries=settings.semantic_max_entries
        ),
        answer_cache=answer_cache,
        scope_parts={
            "embedding": corpus.embedder.model_id,
            "llm": settings.llm_model,
            "prompt": prompt_version(),
            "sampling": shared.generator.sampling,
        },
        dimension=corpus.embedder.dimension,
        ttl_s=settings.llm_ttl_s,
    )
    sync = asyncio.create_task(semantic.run_sync(), name="semantic-index-sync")
    stack.push_async_callback(_cancel, sync)
    return semantic


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
