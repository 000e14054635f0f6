"""One function that builds everything from settings, starting embedded parts where nothing is
configured, and closes it all again; and what the service does besides answering (``stats``,
``invalidate``), so that routes only translate HTTP."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import openai

from rag.cache.invalidation import Invalidation
from rag.cache.layers import Models
from rag.corpus import Corpus, open_corpus, sample_corpus
from rag.embedding import SentenceTransformerEmbedder
from rag.feedback import request_id_secret
from rag.generation import OpenAIGenerator
from rag.ingest import collect_documents
from rag.local import local_llm_server
from rag.metrics import Metrics
from rag.pipeline import RagPipeline
from rag.prices import load_price
from rag.prompt import PromptBuilder
from rag.semantic.rule import SemanticRule
from rag.sessions import rewrite_version
from rag.settings import Settings
from rag.shedding import GenerationLimiter
from rag.tenant import Shared, Tenant, open_tenant

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Services:
    """The corpus, one ``Tenant`` per API key (one ``""`` tenant when /ask is open) and the
    metrics they share; what the app uses."""

    corpus: Corpus
    tenants: dict[str, Tenant]
    metrics: Metrics
    generator: OpenAIGenerator  # the LLM every tenant shares (``/healthz`` pings it)
    invalidation: Invalidation  # over the base namespace and every tenant's
    settings: Settings

    @property
    def default(self) -> Tenant:
        """The first tenant: the only one when /ask is open."""
        return next(iter(self.tenants.values()))

    @property
    def pipeline(self) -> RagPipeline:
        return self.default.pipeline

    async def stats(self, tenants: Collection[Tenant] | None = None) -> dict[str, Any]:
        """``/stats``: the metrics' snapshot, the semantic index summed over tenants, and the
        semantic mode with one row per rule scope of ``tenants`` (default: all)."""
        snapshot = self.metrics.snapshot()
        everyone = list(self.tenants.values())
        policies = [t.pipeline.policy for t in tenants or everyone if t.pipeline.policy]
        semantic = [t.pipeline.semantic for t in everyone if t.pipeline.semantic]
        summary: dict[str, Any] = {"mode": self.settings.semantic_mode, "scopes": []}
        if semantic:
            summary.update(semantic[0].stats())  # settings are the same for every tenant
            for counter in ("entries", "evictions"):  # counts are summed over them
                summary[counter] = sum(cache.stats()[counter] for cache in semantic)
            summary["synced"] = all(cache.synced for cache in semantic)
        for policy in policies:
            summary["scopes"].append(policy.report(await policy.read()))
        snapshot["semantic"] = summary
        return snapshot


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
        generator = open_generator(stack, settings, llm_http_client)
        shared = _shared(settings, corpus, generator)
        tenants = {
            name: await open_tenant(stack, settings, corpus, shared, ns)
            for name, ns in settings.tenant_namespaces().items()
        }
        if settings.seed_sample_corpus and await corpus.retriever.count() == 0:
            report = await corpus.ingestor.add(collect_documents(sample_corpus(settings)))
            log.info("empty collection: ingested the sample corpus (%d chunks)", report.chunks)

        def clear_semantic_indexes() -> None:  # this process's, at once; others by message
            for tenant in tenants.values():
                if tenant.pipeline.semantic is not None:
                    tenant.pipeline.semantic.index.clear()

        yield Services(
            settings=settings,
            corpus=corpus,
            tenants=tenants,
            metrics=shared.metrics,
            generator=generator,
            invalidation=Invalidation(
                redis=corpus.redis,
                namespace=settings.namespace,
                tenant_namespaces=[t.namespace for t in tenants.values()],
                on_semantic_cleared=clear_semantic_indexes,
                near=corpus.near,
            ),
        )


def open_generator(
    stack: AsyncExitStack, settings: Settings, http_client: httpx2.AsyncClient | None
) -> OpenAIGenerator:
    """The LLM client: ``llm_base_url``, or the local llama.cpp server started here."""
    extra_body: dict[str, Any] | None = None
    if settings.llm_base_url:
        base_url = settings.llm_base_url
    else:
        base_url = stack.enter_context(local_llm_server(threads=settings.llm_threads))
        # llama.cpp reuses KV state between prompts unless told not to; answers must not
        # depend on which request came before. DRY: its sampler against repetition loops.
        extra_body = {"cache_prompt": False}
        if settings.llm_dry_multiplier:
            extra_body["dry_multiplier"] = settings.llm_dry_multiplier
    llm = openai.AsyncOpenAI(
        base_url=base_url,
        api_key=settings.llm_api_key.get_secret_value() or "not-needed",
        timeout=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,  # with exponential backoff, by the SDK
        http_client=http_client,
    )
    stack.push_async_callback(llm.close)
    return OpenAIGenerator(
        client=llm,
        model_id=settings.llm_model,
        max_tokens=settings.llm_max_tokens,
        temperature=settings.llm_temperature,
        stop=settings.llm_stop,
        extra_body=extra_body,
    )


def _shared(settings: Settings, corpus: Corpus, generator: OpenAIGenerator) -> Shared:
    metrics = Metrics()
    metrics.redis_available.set_function(lambda: float(corpus.redis.available))
    prompt = PromptBuilder(corpus.embedder, settings.context_sentences)
    return Shared(
        generator=generator,
        metrics=metrics,
        rule=SemanticRule.from_settings(settings),
        price=load_price(settings.price_model or settings.llm_model),
        limiter=GenerationLimiter(
            max_running=settings.generation_slots,
            max_waiting=settings.max_waiting_generations,
            retry_after_s=settings.overload_retry_after_s,
            max_wait_s=settings.max_generation_wait_s,
        ),
        models=Models(
            embedding_id=corpus.embedder.model_id,
            dimension=corpus.embedder.dimension,
            llm=settings.llm_model,
            sampling=generator.sampling,
            answer_prompt=prompt.version,
            rewrite_prompt=rewrite_version(),
        ),
        prompt=prompt,
        request_id_secret=request_id_secret(
            settings.request_id_secret.get_secret_value(), settings.data_dir
        ),
    )
