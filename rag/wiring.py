"""One function that builds everything from settings, starting embedded parts where nothing is
configured, and closes it all again."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
import openai
import tiktoken
from qdrant_client import AsyncQdrantClient

from rag.cache.connect import REDIS_ERRORS, RedisClient, connect
from rag.cache.layers import (
    CorpusVersion,
)
from rag.cache.store import RedisStore
from rag.cache.tags import TagIndex
from rag.embedding import SentenceTransformerEmbedder, default_model_path
from rag.generation import OpenAIGenerator
from rag.ingest import Ingestor, TokenChunker, collect_documents
from rag.local import embedded_valkey, local_llm_server
from rag.metrics import Metrics
from rag.pipeline import RagPipeline
from rag.prices import load_price
from rag.retrieval import QdrantRetriever
from rag.semantic.rule import SemanticRule
from rag.settings import Settings
from rag.shedding import GenerationLimiter
from rag.tenant import Shared, open_tenant
from rag.tenant import Tenant as Tenant  # re-exported: the app serves tenants
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
class Services:
    """The corpus, one ``Tenant`` per API key (one ``""`` tenant when /ask is open) and the
    metrics they share; what the app uses."""

    corpus: Corpus
    tenants: dict[str, Tenant]
    metrics: Metrics
    generator: OpenAIGenerator  # the LLM every tenant shares (``/healthz`` pings it)

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

        retriever = await _open_retriever(stack, settings, embedder.dimension)

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


async def _open_retriever(
    stack: AsyncExitStack, settings: Settings, dimension: int
) -> QdrantRetriever:
    """The vector DB: a Qdrant server when ``qdrant_url`` is set, else local mode on a folder."""
    if settings.qdrant_url:
        qdrant = AsyncQdrantClient(
            url=settings.qdrant_url, api_key=settings.qdrant_api_key.get_secret_value() or None
        )
    else:
        qdrant = _open_local_qdrant(settings.data_dir.resolve() / "qdrant")
    stack.push_async_callback(qdrant.close)
    retriever = QdrantRetriever(client=qdrant, collection=settings.collection, dimension=dimension)
    await retriever.ensure_collection()
    return retriever


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

        shared = Shared(
            generator=generator,
            metrics=Metrics(),
            rule=SemanticRule.load(
                threshold=settings.semantic_threshold,
                min_score=settings.semantic_min_score,
                verifier_path=settings.verifier_path,
            ),
            price=load_price(settings.price_model or settings.llm_model),
            limiter=GenerationLimiter(
                max_running=settings.generation_slots,
                max_waiting=settings.max_waiting_generations,
                retry_after_s=settings.overload_retry_after_s,
                max_wait_s=settings.max_generation_wait_s,
            ),
        )
        tenants = {
            name: await open_tenant(stack, settings, corpus, shared, ns)
            for name, ns in settings.tenant_namespaces().items()
        }
        if settings.seed_sample_corpus and await corpus.retriever.count() == 0:
            report = await corpus.ingestor.add(collect_documents([SAMPLE_CORPUS]))
            log.info("empty collection: ingested the sample corpus (%d chunks)", report.chunks)
        yield Services(
            corpus=corpus, tenants=tenants, metrics=shared.metrics, generator=shared.generator
        )
