"""One tenant: what one API key (or everyone, when no keys are set) asks through, built from the
settings over the shared corpus, LLM, semantic rule, limiter and metrics. Every cache layer of
``rag.cache.layers.SPECS`` is a ``CachedLayer`` over the one fail-open ``RedisGateway``."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from rag.cache.aside import Background, CachedLayer
from rag.cache.flight import SingleFlight
from rag.cache.invalidation import Invalidation, Tags
from rag.cache.layers import SPECS, AnswerLayer, Models
from rag.cache.relay import AnswerRelay
from rag.corpus import Corpus, cancel
from rag.corpus_version import CorpusVersion
from rag.feedback import Feedback, RequestIds
from rag.generation import OpenAIGenerator
from rag.metrics import Metrics
from rag.pipeline import AskLimits, RagPipeline
from rag.prices import ModelPrice
from rag.prompt import PromptBuilder
from rag.protocols import Embedder, Generator, KVStore, Retriever
from rag.semantic.cache import SemanticCache
from rag.semantic.index import SemanticIndex
from rag.semantic.judge import AnswerJudge
from rag.semantic.outcomes import OutcomeStore
from rag.semantic.policy import SemanticPolicy
from rag.semantic.rule import SemanticRule
from rag.sessions import Conversations, QuestionRewriter, SessionStore
from rag.settings import Settings
from rag.shedding import GenerationLimiter, TokenBucket
from rag.stages import AnswerStage, RetrievalStage


@dataclass(frozen=True, kw_only=True)
class Tenant:
    """What one API key (or everyone, when no keys are set) asks through: its own cache entries,
    exact and semantic, and sessions, under its own key namespace."""

    namespace: str
    pipeline: RagPipeline
    conversations: Conversations
    feedback: Feedback
    rate: TokenBucket | None = None  # its request rate, when RAG_TENANT_RATE_PER_S is set


@dataclass(frozen=True, kw_only=True)
class Shared:
    """What every tenant uses as it is: built once, not once per tenant."""

    generator: OpenAIGenerator
    metrics: Metrics
    rule: SemanticRule
    price: ModelPrice
    limiter: GenerationLimiter  # one bound on generations for the whole process
    models: Models  # what the layers' keys name
    prompt: PromptBuilder  # what the model reads; its version is in ``models``
    request_id_secret: bytes  # signs request ids (``rag.feedback``)


@dataclass(frozen=True, kw_only=True)
class Parts:
    """What one tenant's pipeline is built over; the same for every tenant."""

    store: KVStore
    embedder: Embedder
    retriever: Retriever
    corpus_version: CorpusVersion
    generator: Generator
    metrics: Metrics
    models: Models
    prompt: PromptBuilder
    limiter: GenerationLimiter | None = None
    tags: Tags | None = None
    price: ModelPrice | None = None
    request_id_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))


Layers = dict[str, CachedLayer[Any, Any]]


def build_pipeline(
    settings: Settings,
    ns: str,
    parts: Parts,
    *,
    coalescing: tuple[SingleFlight, AnswerRelay] | None = None,
    semantic: Callable[[AnswerLayer], tuple[SemanticCache, SemanticPolicy]] | None = None,
) -> tuple[RagPipeline, Layers]:
    """A tenant's pipeline under the key namespace ``ns`` and its layers, one ``CachedLayer``
    per spec of ``SPECS``. The app builds its tenants with it, and the unit tests their rigs."""
    flight, relay = coalescing or (None, None)
    background = Background()
    layers: Layers = {
        spec.layer.name: CachedLayer(
            spec=spec.from_settings(settings, ns, parts.models),
            store=parts.store,
            metrics=parts.metrics,
            background=background,
            flight=flight,
        )
        for spec in SPECS
    }
    semantic_cache, policy = semantic(layers["llm"].spec) if semantic else (None, None)
    answers = AnswerStage(
        answers=layers["llm"],
        generator=parts.generator,
        prompt=parts.prompt,
        metrics=parts.metrics,
        relay=relay,
        tags=parts.tags,
        limiter=parts.limiter,
        semantic=semantic_cache,
    )
    retrieval = RetrievalStage(
        embedder=parts.embedder,
        retriever=parts.retriever,
        embeddings=layers["embedding"],
        searches=layers["search"],
        metrics=parts.metrics,
        store=parts.store,
    )
    limits = AskLimits(settings.max_top_k, settings.max_query_chars)
    pipeline = RagPipeline(
        retrieval=retrieval,
        answers=answers,
        corpus_version=parts.corpus_version,
        metrics=parts.metrics,
        limits=limits,
        background=background,
        request_ids=RequestIds(
            secret=parts.request_id_secret, namespace=ns, ttl_s=settings.llm_ttl_s
        ),
        policy=policy,
        price=parts.price,
    )
    return pipeline, layers


async def open_tenant(
    stack: AsyncExitStack, settings: Settings, corpus: Corpus, shared: Shared, ns: str
) -> Tenant:
    """One tenant's caches (all under the key namespace ``ns``), pipeline and conversations.
    Background tasks and clean-ups go on ``stack``."""
    parts = Parts(
        store=corpus.cache,
        embedder=corpus.embedder,
        retriever=corpus.retriever,
        corpus_version=corpus.corpus_version,
        generator=shared.generator,
        metrics=shared.metrics,
        models=shared.models,
        prompt=shared.prompt,
        limiter=shared.limiter,
        tags=corpus.tags,
        price=shared.price,
        request_id_secret=shared.request_id_secret,
    )
    pipeline, layers = build_pipeline(
        settings,
        ns,
        parts,
        coalescing=_coalescing(stack, settings, corpus, ns) if settings.single_flight else None,
        semantic=lambda answers: _semantic(stack, settings, corpus, shared, ns, answers),
    )
    stack.push_async_callback(pipeline.aclose)
    rate = settings.tenant_rate_per_s
    feedback = Feedback(
        redis=corpus.redis,
        namespace=ns,
        ids=pipeline.request_ids,
        outcomes=pipeline.policy.outcomes if pipeline.policy is not None else None,
        invalidation=Invalidation(redis=corpus.redis, namespace=ns, near=corpus.near),
    )
    return Tenant(
        namespace=ns,
        pipeline=pipeline,
        feedback=feedback,
        conversations=_conversations(settings, corpus, shared, ns, layers["rewrite"]),
        rate=TokenBucket(rate_per_s=rate, burst=settings.tenant_burst) if rate else None,
    )


def _conversations(
    settings: Settings, corpus: Corpus, shared: Shared, ns: str, rewrites: CachedLayer[Any, Any]
) -> Conversations:
    return Conversations(
        sessions=SessionStore(
            redis=corpus.redis,
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


def _coalescing(
    stack: AsyncExitStack, settings: Settings, corpus: Corpus, ns: str
) -> tuple[SingleFlight, AnswerRelay]:
    """Single-flight for the cached layers and the relay for answers; in this process first,
    across processes through Redis."""
    flight = SingleFlight(
        store=corpus.redis,
        namespace=ns,
        lock_ttl_s=settings.flight_lock_ttl_s,
        wait_s=settings.flight_wait_s,
    )
    relay = AnswerRelay(
        store=corpus.redis,
        namespace=ns,
        # a blocking read must end before the client's socket timeout does
        poll_s=min(0.5, 0.5 * settings.redis_timeout_s),
        lock_ttl_s=settings.flight_lock_ttl_s,
        wait_s=settings.flight_wait_s,
        stream_ttl_s=settings.relay_stream_ttl_s,
    )
    listener = asyncio.create_task(flight.run_listener(), name="single-flight-listener")
    stack.push_async_callback(cancel, listener)
    return flight, relay


def _semantic(
    stack: AsyncExitStack,
    settings: Settings,
    corpus: Corpus,
    shared: Shared,
    ns: str,
    answers: AnswerLayer,
) -> tuple[SemanticCache, SemanticPolicy]:
    """The tenant's semantic cache, its index kept in sync in the background, and the policy
    that decides what it serves and counts how its candidates turn out."""
    semantic = SemanticCache(
        redis=corpus.redis,
        rule=shared.rule,
        index=SemanticIndex(
            dimension=corpus.embedder.dimension, max_entries=settings.semantic_max_entries
        ),
        answers=answers,
        embedding_model_id=corpus.embedder.model_id,
    )
    policy = SemanticPolicy(
        mode=settings.semantic_mode,
        namespace=ns,
        scope=semantic.rule_scope,
        static_threshold=settings.semantic_threshold,
        outcomes=OutcomeStore(
            redis=corpus.redis,
            namespace=ns,
            grid=settings.semantic_auto_thresholds,
            ttl_s=settings.semantic_outcomes_ttl_s,
        ),
        judge=AnswerJudge(settings.semantic_judge_min_cosine),
        embedder=corpus.embedder,
        budget=settings.semantic_max_false_hit_rate,
        audit_rate=settings.semantic_audit_rate,
        metrics=shared.metrics,
    )
    if settings.semantic_mode != "off":
        sync = asyncio.create_task(semantic.run_sync(), name="semantic-index-sync")
        stack.push_async_callback(cancel, sync)
    return semantic, policy
