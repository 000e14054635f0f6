"""The embedded Qdrant Edge store (``rag.edge``): its index is built in a child process while
search and writes go on, and nothing written meanwhile is lost; a build that fails changes
nothing; the store survives a restart and one process owns it; a store made before int8 copies
gets them at its next build; a local-mode data dir (the embedded store before it) is migrated on
the first start, whole, and left as it was.
(That document changes are all or nothing on it: ``test_document_changes``.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe
from qdrant_client import AsyncQdrantClient

from rag import edge
from rag.corpus import open_corpus
from rag.corpus_version import CorpusState, CorpusVersion
from rag.edge import EdgeRetriever
from rag.embedding import SentenceTransformerEmbedder
from rag.errors import RetrievalError
from rag.ingest import Ingestor, TokenChunker, collect_documents
from rag.retrieval import QdrantRetriever
from rag.settings import Settings
from rag.tokens import get_encoding
from rag.types import Chunk

DIMENSION = 32


def chunks_of(doc_id: str, n: int) -> list[Chunk]:
    return [
        Chunk(
            doc_id=doc_id,
            chunk_id=f"{doc_id}#{i}",
            text=f"{doc_id} {i}",
            source="",
            content_hash="h",
        )
        for i in range(n)
    ]


def vectors(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, DIMENSION)).astype(np.float32)
    return list(v / np.linalg.norm(v, axis=1, keepdims=True))


async def write(store: EdgeRetriever, doc_id: str, n: int, seed: int) -> list[np.ndarray]:
    """``n`` chunks of ``doc_id`` written and revealed (a switch of the record)."""
    state = await store.read_state() or CorpusState(version="v0")
    generation = f"g-{doc_id}"
    found = vectors(n, seed)
    await store.upsert(chunks_of(doc_id, n), found, {doc_id: generation})
    await store.write_state(
        CorpusState(
            version=f"v-{doc_id}",
            revealed={**state.revealed, generation: doc_id},
            retired=dict(state.retired),
        )
    )
    return found


def store_at(folder: Path, index_after: int = 300) -> EdgeRetriever:
    return EdgeRetriever(
        folder=folder, dimension=DIMENSION, hnsw_ef=64, index_after=index_after, quiet_s=0.2
    )


async def test_the_index_is_built_aside_while_search_and_writes_go_on(tmp_path: Path) -> None:
    store = store_at(tmp_path / "edge")
    first = await write(store, "first", 2000, seed=1)
    searches = 0
    while not store.building:  # the build begins once writes have been quiet
        await store.search(first[0], 4)
        await asyncio.sleep(0.01)
    during = await write(store, "during", 50, seed=2)  # journaled, replayed on the new shard
    await store.discard(["g-first"])  # a delete while it builds
    await store.upsert(chunks_of("first", 2000), first, {"first": "g-first"})
    while store.building:
        found = await store.search(during[7], 4)  # the event loop is free meanwhile
        assert found[0].chunk.chunk_id == "during#7"
        searches += 1
        await asyncio.sleep(0.01)
    assert store.builds == 1 and searches > 10
    assert store.unindexed() < 300  # the index covers what was written before the build
    assert await store.count() == 2050
    for i in (0, 999, 1999):
        assert (await store.search(first[i], 4))[0].chunk.chunk_id == f"first#{i}"
    await store.aclose()

    reopened = store_at(tmp_path / "edge")  # the built shard is the one a restart loads
    live = (tmp_path / "edge" / "current").read_text()
    assert live != "shard-0"
    assert sorted(p.name for p in (tmp_path / "edge").iterdir()) == sorted(
        ["corpus.json", "current", live]
    )
    await reopened.read_state()
    assert await reopened.count() == 2050 and reopened.unindexed() < 300
    await reopened.aclose()


async def test_a_failed_build_leaves_the_store_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fails(path: Path) -> None:
        raise RuntimeError("the index builder was killed")

    monkeypatch.setattr(edge, "_build_in_child", fails)
    store = store_at(tmp_path / "edge")
    written = await write(store, "doc", 400, seed=3)
    await asyncio.sleep(0.3)
    await store.wait_indexed()
    assert store.builds == 0 and not store.building
    assert [p.name for p in (tmp_path / "edge").glob("shard-*")] == ["shard-0"]
    assert await store.count() == 400
    assert (await store.search(written[5], 1))[0].chunk.chunk_id == "doc#5"
    await store.aclose()


async def test_one_process_owns_the_store_and_a_crashed_build_is_cleared(tmp_path: Path) -> None:
    store = store_at(tmp_path / "edge", index_after=10**9)
    await write(store, "doc", 10, seed=4)
    with pytest.raises(RetrievalError, match=r"in use by another process.*RAG_QDRANT_URL"):
        store_at(tmp_path / "edge")
    await store.aclose()
    (tmp_path / "edge" / "shard-5e1f").mkdir()  # what a process killed mid-build leaves
    reopened = store_at(tmp_path / "edge")
    assert not (tmp_path / "edge" / "shard-5e1f").exists()
    await reopened.read_state()
    assert await reopened.count() == 10
    await reopened.aclose()


async def test_a_local_mode_data_dir_is_migrated_whole_on_the_first_start(
    tmp_path: Path, valkey_url: str, embedder: SentenceTransformerEmbedder
) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(
        data_dir=data_dir,
        redis_url=valkey_url,
        namespace="edge-migration",
        seed_sample_corpus=False,
        llm_base_url="http://127.0.0.1:9/v1",  # never called
    )
    # The store as the service kept it before: qdrant-client's local mode on a folder.
    client = AsyncQdrantClient(path=str(data_dir / "qdrant"))
    old = QdrantRetriever(
        client=client, collection=settings.collection, dimension=embedder.dimension
    )
    await old.ensure_collection()
    version = CorpusVersion(store=old, redis=None, namespace="m", collection="c", poll_s=1)
    await version.start()
    encoding = get_encoding("cl100k_base", data_dir / "tiktoken")
    ingestor = Ingestor(
        embedder=embedder,
        retriever=old,
        chunker=TokenChunker(encoding=encoding, size=64, overlap=8),
        corpus_version=version,
        batch_size=16,
        collect_after_s=0.0,
        switch_chunks=512,
    )
    await ingestor.add(collect_documents([Path(__file__).parent.parent.parent / "docs"]))
    await ingestor.aclose()
    question = (await embedder.embed(["How long are answers cached?"]))[0]
    before = [(f.chunk.chunk_id, round(f.score, 4)) for f in await old.search(question, 4)]
    stored_before = len(await old.stored())
    await client.close()
    files_before = sorted(p.relative_to(data_dir) for p in (data_dir / "qdrant").rglob("*"))

    async with open_corpus(settings, embedder=embedder) as corpus:
        assert isinstance(corpus.retriever, EdgeRetriever)
        assert corpus.corpus_version.current == version.current
        assert len(await corpus.retriever.stored()) == stored_before > 20
        after = [
            (f.chunk.chunk_id, round(f.score, 4))
            for f in await corpus.retriever.search(question, 4)
        ]
        assert after == before
    assert sorted(p.relative_to(data_dir) for p in (data_dir / "qdrant").rglob("*")) == files_before

    async with open_corpus(settings, embedder=embedder) as corpus:  # once only
        assert corpus.corpus_version.current == version.current
        assert len(await corpus.retriever.stored()) == stored_before


async def test_a_store_made_before_int8_copies_gets_them_at_its_next_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def without_int8(dimension: int) -> qe.EdgeConfig:  # the configuration of earlier versions
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine),
            hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10_000),
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
        )

    folder = tmp_path / "edge"
    with monkeypatch.context() as patch:
        patch.setattr(edge, "shard_config", without_int8)
        store = store_at(folder, index_after=10**9)  # no build yet
    found = await write(store, "old", 1000, seed=5)
    await store.aclose()
    assert not list(folder.rglob("quantized.data"))

    store = store_at(folder)  # this version: the next build adds the int8 copies
    found += await write(store, "new", 400, seed=6)
    await store.wait_indexed()
    assert store.builds == 1 and list(folder.rglob("quantized.data"))
    hits = await store.search(found[10], 1)
    assert hits[0].chunk.chunk_id == "old#10" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    await store.aclose()
