"""One function that builds everything from settings, starting embedded parts where nothing is
configured, and closes it all again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import openai
import tiktoken
from qdrant_client import AsyncQdrantClient

from rag.cache.connect import REDIS_ERRORS, RedisClient, connect
from rag.cache.flight import SingleFlight
from rag.cache.layers import (
    AnswerCache,
    CorpusVersion,
    EmbeddingCache,
    RewriteCache,
    SearchResultCache,
)
from rag.cache.relay import AnswerRelay
from rag.cache.stage import Background, CachedStage
from rag.cache.store import RedisStore, StrictStore
from rag.cache.tags import TagIndex
from rag.embedding import SentenceTransformerEmbedder, default_model_path
from rag.generation import OpenAIGenerator
from rag.ingest import Ingestor, TokenChunker, collect_documents
from rag.local import embedded_valkey, local_llm_server
from rag.metrics import Metrics
from rag.pipeline import AskLimits, RagPipeline
from rag.prices import ModelPrice, load_price
from rag.prompt import prompt_version
from rag.retrieval import QdrantRetriever
from rag.semantic.cache import SemanticCache
from rag.semantic.index import SemanticIndex
from rag.semantic.rule import SemanticRule
from rag.sessions import Conversations, QuestionRewriter, SessionStore, rewrite_version
from rag.settings import Settings
from rag.shedding import GenerationLimiter
from rag.stages import AnswerLayer, CachedRetrieval
from rag.tokens import get_encoding

log = logging.getLogger(__name__)

SAMPLE_CORPUS = Path(__file__).resolve().parent / "sample_corpus"


@dataclass(frozen=True, kw_only=True)
class Corpus:
    """The cache store, the embedder and the vector DB: enough to ingest documents."""

    settings: Settings
    encoding: tiktoken.Encoding  # chunks documents; counts session history
    redis: RedisClient
    store: RedisStore
    embedder: SentenceTransformerEmbedder
    retriever: QdrantRetriever
    corpus_version: CorpusVersion
    ingestor: Ingestor
    tags: TagIndex


@dataclass(frozen=True, kw_only=True)
class Tenant:
    """What one API key (or everyone, when no keys are set) asks through: its own cache entries,
    exact and semantic, and sessions, under its own key namespace."""

    namespace: str
    pipeline: RagPipeline
    conversations: Conversations
    invalidation: TagIndex  # deletes this tenant's entries by layer


@dataclass(frozen=True, kw_only=True)
class Services:
    """The corpus, one ``Tenant`` per API key (one ``""`` tenant when /ask is open) and the
    metrics they share; what the app uses."""

    corpus: Corpus
    tenants: dict[str, Tenant]
    metrics: Metrics

    @property
    def default(self) -> Tenant:
        """The first tenant: the only one when /ask is open."""
        return next(iter(self.tenants.values()))

    @property
    def pipeline(self) -> RagPipeline:
        return self.default.pipeline


@asynccontextmanager
async def open_corpus(
    settings: Settings, *, embedder: SentenceTransformerEmbedder | None = None
) -> AsyncIterator[Corpus]:
    """Connect (or start) the cache store and the vector DB and load the embedder.
    ``embedder`` lets a test process share one loaded model between apps."""
    async with AsyncExitStack() as stack:
        data_dir = settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)

        redis = connect(settings, settings.redis_url or stack.enter_context(embedded_valkey()))
        stack.push_async_callback(redis.aclose)
        store = RedisStore(client=redis, timeout_s=settings.redis_timeout_s)
        await _warn_if_unbounded(redis)

        if embedder is None:
            embedder = SentenceTransformerEmbedder(
                model_path=settings.embedding_model_path or default_model_path(),
                model_id=settings.embedding_model_id,
                batch_size=settings.embedding_batch_size,
            )
            stack.callback(embedder.close)

        if settings.qdrant_url:
            qdrant = AsyncQdrantClient(
                url=settings.qdrant_url, api_key=settings.qdrant_api_key.get_secret_value() or None
            )
        else:
            qdrant = _open_local_qdrant(data_dir / "qdrant")
        stack.push_async_callback(qdrant.close)
        retriever = QdrantRetriever(
            client=qdrant, collection=settings.collection, dimension=embedder.dimension
        )
        await retriever.ensure_collection()

        corpus_version = CorpusVersion(
            store=store,
            namespace=settings.namespace,
            collection=settings.collection,
            ttl_s=settings.corpus_version_ttl_s,
        )
        encoding = get_encoding(settings.tokenizer_encoding, data_dir / "tiktoken")
        chunker = TokenChunker(
            encoding=encoding,
            size=settings.chunk_tokens,
            overlap=settings.chunk_overlap_tokens,
        )
        tags = TagIndex(store=store, namespace=settings.namespace)
        yield Corpus(
            settings=settings,
            encoding=encoding,
            tags=tags,
            redis=redis,
            store=store,
            embedder=embedder,
            retriever=retriever,
            corpus_version=corpus_version,
            ingestor=Ingestor(
                embedder=embedder,
                retriever=retriever,
                chunker=chunker,
                corpus_version=corpus_version,
                batch_size=settings.embedding_batch_size,
                tags=tags,
            ),
        )


async def _warn_if_unbounded(redis: RedisClient) -> None:
    """A cache that can grow without bound fills the server and then fails writes: say so."""
    try:
        config = await redis.config_get("maxmemory*")
    except REDIS_ERRORS:
        return  # managed services often forbid CONFIG, and a down Redis is reported elsewhere
    values = {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in config.items()
    }
    if values.get("maxmemory", "0") == "0" and values.get("maxmemory-policy") == "noeviction":
        log.warning(
            "Redis has no maxmemory and evicts nothing (noeviction): the caches can grow without "
            "bound. Set maxmemory and maxmemory-policy allkeys-lru (see README, sizing)."
        )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _open_local_qdrant(path: Path) -> AsyncQdrantClient:
    try:
        return AsyncQdrantClient(path=str(path))
    except RuntimeError as exc:  # qdrant local mode locks its folder to one process
        raise RuntimeError(
            f"the vector DB folder {path} is in use by another process (a running `rag serve`?). "
            "Stop it, or use a Qdrant server (RAG_QDRANT_URL) to share the corpus."
        ) from exc


@asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    embedder: SentenceTransformerEmbedder | None = None,
    llm_http_client: httpx2.AsyncClient | None = None,
) -> AsyncIterator[Services]:
    """Everything the service needs. Starts the local LLM when ``llm_base_url`` is empty.
    ``llm_http_client`` lets a test script the LLM's HTTP transport."""
    async with AsyncExitStack() as stack:
        corpus = await stack.enter_async_context(open_corpus(settings, embedder=embedder))

        if settings.llm_base_url:
            base_url, extra_body = settings.llm_base_url, None
        else:
            base_url = stack.enter_context(local_llm_server(threads=settings.llm_threads))
            # llama.cpp reuses KV state between prompts unless told not to; answers must not
            # depend on which request came before.
            extra_body = {"cache_prompt": False}
        llm = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=settings.llm_api_key.get_secret_value() or "not-needed",
            timeout=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,  # with exponential backoff, by the SDK
            http_client=llm_http_client,
        )
        stack.push_async_callback(llm.close)
        generator = OpenAIGenerator(
            client=llm,
            model_id=settings.llm_model,
            max_tokens=settings.llm_max_tokens,
            temperature=settings.llm_temperature,
            extra_body=extra_body,
        )

        shared = _Shared(
            generator=generator,
            metrics=Metrics(),
            rule=SemanticRule.load(
                threshold=settings.semantic_threshold,
                min_score=settings.semantic_min_score,
                verifier_path=settings.verifier_path,
            ),
            price=load_price(settings.price_model or settings.llm_model),
            limiter=GenerationLimiter(
                max_running=settings.max_generations,
                max_waiting=settings.max_waiting_generations,
                retry_after_s=settings.overload_retry_after_s,
            ),
        )
        tenants = {
            name: await _open_tenant(stack, settings, corpus, shared, ns)
            for name, ns in settings.tenant_namespaces().items()
        }
        if settings.seed_sample_corpus and await corpus.retriever.count() == 0:
            report = await corpus.ingestor.add(collect_documents([SAMPLE_CORPUS]))
            log.info("empty collection: ingested the sample corpus (%d chunks)", report.chunks)
        yield Services(corpus=corpus, tenants=tenants, metrics=shared.metrics)


@dataclass(frozen=True, kw_only=True)
class _Shared:
    """What every tenant uses as it is: built once, not once per tenant."""

    generator: OpenAIGenerator
    metrics: Metrics
    rule: SemanticRule
    price: ModelPrice
    limiter: GenerationLimiter  # one bound on generations for the whole process


async def _open_tenant(
    stack: AsyncExitStack, settings: Settings, corpus: Corpus, shared: _Shared, ns: str
) -> Tenant:
    """One tenant's caches (all under the key namespace ``ns``), pipeline and conversations, over
    the shared corpus, LLM, semantic rule and metrics. Background tasks and clean-ups go on
    ``stack``."""
    store, generator = corpus.store, shared.generator
    flight = relay = None
    if settings.single_flight:
        flight, relay = _coalescing(stack, settings, store, ns)
    background = Background()

    def stage(codec: Any, *, sliding: bool = False) -> CachedStage[Any]:
        return CachedStage(
            codec=codec,
            store=store,
            metrics=shared.metrics,
            background=background,
            flight=flight,
            sliding=sliding,
        )

    answer_cache = _answer_cache(settings, ns, generator)
    semantic = _semantic_cache(settings, corpus, shared, ns, answer_cache)
    sync = asyncio.create_task(semantic.run_sync(), name="semantic-index-sync")
    stack.push_async_callback(_cancel, sync)
    pipeline = RagPipeline(
        retrieval=CachedRetrieval(
            embedder=corpus.embedder,
            retriever=corpus.retriever,
            embeddings=stage(
                _embedding_cache(settings, corpus, ns), sliding=settings.embedding_sliding_ttl
            ),
            searches=stage(_search_cache(settings, corpus, ns)),
            corpus_version=corpus.corpus_version,
            metrics=shared.metrics,
        ),
        answers=AnswerLayer(
            answers=stage(answer_cache),
            generator=generator,
            metrics=shared.metrics,
            relay=relay,
            tags=corpus.tags,
            limiter=shared.limiter,
            store=store,
        ),
        store=store,
        metrics=shared.metrics,
        limits=AskLimits(
            max_top_k=settings.max_top_k,
            max_query_chars=settings.max_query_chars,
            semantic_by_default=settings.semantic_enabled,
        ),
        background=background,
        semantic=semantic,
        price=shared.price,
    )
    stack.push_async_callback(pipeline.aclose)
    rewrites = RewriteCache(
        namespace=ns,
        llm_model=settings.llm_model,
        prompt_version=rewrite_version(),
        sampling=generator.sampling,
        ttl_s=settings.llm_ttl_s,
    )
    conversations = Conversations(
        sessions=SessionStore(
            store=StrictStore(client=corpus.redis, timeout_s=settings.redis_timeout_s),
            namespace=ns,
            ttl_s=settings.session_ttl_s,
            history_tokens=settings.session_history_tokens,
            encoding=corpus.encoding,
        ),
        rewriter=QuestionRewriter(
            generator=generator,
            rewrites=stage(rewrites),
            metrics=shared.metrics,
            max_chars=settings.max_query_chars,
        ),
    )
    invalidation = TagIndex(store=store, namespace=ns)
    return Tenant(
        namespace=ns, pipeline=pipeline, conversations=conversations, invalidation=invalidation
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
    settings: Settings, corpus: Corpus, shared: _Shared, ns: str, answer_cache: AnswerCache
) -> SemanticCache:
    return SemanticCache(
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
