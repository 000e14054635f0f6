"""The corpus: the cache store's gateway, the embedder and the vector DB, enough to ingest
documents; started embedded where nothing is configured."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import tiktoken
from qdrant_client import AsyncQdrantClient

from rag.cache.gateway import RedisGateway, connect
from rag.cache.invalidation import Invalidation, Tags
from rag.cache.near import NearCache, NearStore
from rag.corpus_version import CorpusVersion
from rag.edge import EdgeRetriever, migrate_local_mode
from rag.embedding import SentenceTransformerEmbedder, default_model_path
from rag.ingest import Ingestor, TokenChunker
from rag.local import embedded_valkey
from rag.protocols import KVStore
from rag.retrieval import QdrantRetriever
from rag.settings import Settings
from rag.tokens import get_encoding

log = logging.getLogger(__name__)

SAMPLE_CORPUS = Path(__file__).resolve().parent / "sample_corpus"
_CHECKOUT = Path(__file__).resolve().parent.parent
# The local model's own answers (scripts/eval_answers.py): seeded, they would come back as
# sources and feed its mistakes into new answers.
_NOT_SEEDED = {"local-model-answers.md"}


def sample_corpus(settings: Settings) -> list[Path]:
    """What a first start ingests: ``rag/sample_corpus``, and (``seed_project_docs``) this
    service's own documentation when it runs from a checkout, so that asking the service about
    itself works out of the box."""
    paths = [SAMPLE_CORPUS]
    if settings.seed_project_docs and (_CHECKOUT / "README.md").is_file():
        paths.append(_CHECKOUT / "README.md")
        docs = sorted((_CHECKOUT / "docs").rglob("*.md"))
        paths += [path for path in docs if path.name not in _NOT_SEEDED]
    return paths


@dataclass(frozen=True, kw_only=True)
class Corpus:
    settings: Settings
    encoding: tiktoken.Encoding  # chunks documents; counts session history
    redis: RedisGateway  # every Redis command
    cache: KVStore  # what the cache layers read and write: the near cache over ``redis``
    near: NearCache | None
    embedder: SentenceTransformerEmbedder
    retriever: QdrantRetriever | EdgeRetriever
    corpus_version: CorpusVersion
    ingestor: Ingestor
    tags: Tags


@asynccontextmanager
async def open_corpus(
    settings: Settings, *, embedder: SentenceTransformerEmbedder | None = None
) -> AsyncIterator[Corpus]:
    """Connect (or start) the cache store and the vector DB and load the embedder.
    ``embedder`` lets a test process share one loaded model between apps."""
    async with AsyncExitStack() as stack:
        data_dir = settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)

        redis, cache, near = await _open_cache(stack, settings)

        if embedder is None:
            embedder = SentenceTransformerEmbedder(
                model_path=settings.embedding_model_path or default_model_path(),
                model_id=settings.embedding_model_id,
                batch_size=settings.embedding_batch_size,
            )
            stack.callback(embedder.close)

        retriever = await _open_retriever(stack, settings, embedder.dimension)
        corpus_version = CorpusVersion(
            store=retriever,
            redis=redis,
            namespace=settings.namespace,
            collection=settings.collection,
            poll_s=settings.corpus_version_poll_s,
        )
        await corpus_version.start()
        follower = asyncio.create_task(corpus_version.follow(), name="corpus-version-follower")
        stack.push_async_callback(cancel, follower)
        encoding = get_encoding(settings.tokenizer_encoding, data_dir / "tiktoken")
        chunker = TokenChunker(
            encoding=encoding, size=settings.chunk_tokens, overlap=settings.chunk_overlap_tokens
        )
        ingestor = Ingestor(
            embedder=embedder,
            retriever=retriever,
            chunker=chunker,
            corpus_version=corpus_version,
            batch_size=settings.embedding_batch_size,
            # other processes follow a switch within their poll (plus a read)
            collect_after_s=2 * settings.corpus_version_poll_s + 0.5,
            switch_chunks=settings.ingest_switch_chunks,
            invalidation=Invalidation(redis=redis, namespace=settings.namespace, near=near),
        )
        await ingestor.recover()
        stack.push_async_callback(ingestor.aclose)
        yield Corpus(
            settings=settings,
            encoding=encoding,
            redis=redis,
            cache=cache,
            near=near,
            embedder=embedder,
            retriever=retriever,
            corpus_version=corpus_version,
            tags=Tags(redis=redis, namespace=settings.namespace),
            ingestor=ingestor,
        )


async def _open_cache(
    stack: AsyncExitStack, settings: Settings
) -> tuple[RedisGateway, KVStore, NearCache | None]:
    """The gateway to Redis (``redis_url``, or an embedded Valkey), and what the cache layers
    read and write: the near cache over it, following purges, unless it is turned off."""
    client = connect(settings, settings.redis_url or stack.enter_context(embedded_valkey()))
    stack.push_async_callback(client.aclose)
    redis = RedisGateway(client=client, timeout_s=settings.redis_timeout_s)
    await warn_if_unbounded(redis)
    if settings.near_cache_max_bytes <= 0:
        return redis, redis, None
    near = NearCache(max_bytes=settings.near_cache_max_bytes)
    store = NearStore(
        redis=redis,
        near=near,
        fresh_s=settings.near_cache_fresh_s,
        keep_s=settings.near_cache_keep_s,
        hedge_s=settings.near_cache_hedge_s,
    )
    await store.redis_lost_data()  # notes the marker: a later loss of Redis's data is seen
    purges = asyncio.create_task(store.follow_purges(), name="near-cache-purges")
    stack.push_async_callback(cancel, purges)
    return redis, store, near


async def warn_if_unbounded(redis: RedisGateway) -> None:
    """A cache that can grow without bound fills the server and then fails writes: say so."""
    config = await redis.config("maxmemory*")
    if config is None:
        return  # managed services often forbid CONFIG, and a down Redis is reported elsewhere
    if config.get("maxmemory", "0") == "0" and config.get("maxmemory-policy") == "noeviction":
        log.warning(
            "Redis has no maxmemory and evicts nothing (noeviction): the caches can grow without "
            "bound. Set maxmemory and maxmemory-policy allkeys-lru (see README, sizing)."
        )


async def _open_retriever(
    stack: AsyncExitStack, settings: Settings, dimension: int
) -> QdrantRetriever | EdgeRetriever:
    """The vector DB: a Qdrant server when ``qdrant_url`` is set, else Qdrant Edge in this
    process under ``data_dir/edge``, migrated from qdrant-client's local mode (the embedded
    store before it) on the first start that finds only that."""
    if settings.qdrant_url:
        qdrant = AsyncQdrantClient(
            url=settings.qdrant_url, api_key=settings.qdrant_api_key.get_secret_value() or None
        )
        stack.push_async_callback(qdrant.close)
        retriever = QdrantRetriever(
            client=qdrant, collection=settings.collection, dimension=dimension
        )
        await retriever.ensure_collection()
        return retriever

    def make(folder: Path) -> EdgeRetriever:
        return EdgeRetriever(
            folder=folder,
            dimension=dimension,
            hnsw_ef=settings.edge_hnsw_ef,
            index_after=settings.edge_index_after,
        )

    data_dir = settings.data_dir.resolve()
    folder = data_dir / "edge" / settings.collection
    local_mode = data_dir / "qdrant"
    if not folder.exists() and (local_mode / "collection" / settings.collection).is_dir():
        moved = await migrate_local_mode(local_mode, settings.collection, folder, make)
        log.warning(
            "migrated %d points of collection %r from the local-mode folder %s to %s; the old "
            "folder is kept as it was: delete it once you no longer need it",
            moved,
            settings.collection,
            local_mode,
            folder,
        )
    edge = make(folder)
    stack.push_async_callback(edge.aclose)
    edge.index_soon()
    return edge


async def cancel(task: asyncio.Task[None]) -> None:
    """Cancel a background task and wait for it to end."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
