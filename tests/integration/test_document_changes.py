"""A document change is all or nothing (issue #25), on each vector store the service can run on
this machine (qdrant-client's engine, as a server runs it, and the embedded Qdrant Edge):
readers see a document's old version whole until the switch and its new version whole after
it; a failed or cancelled write changes nothing; concurrent writes of one document end with the
last switch whole; a delete hides at once; what a dead process left is recovered at the next
start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tiktoken
from qdrant_client import AsyncQdrantClient

from rag.corpus_version import CorpusVersion
from rag.edge import EdgeRetriever
from rag.errors import LLMError
from rag.ingest import Document, Ingestor, TokenChunker
from rag.protocols import Vector
from rag.retrieval import QdrantRetriever
from rag.tokens import get_encoding
from tests.unit.fakes import HashEmbedder

COLLECT_AFTER_S = 0.2
PROBE = np.ones(HashEmbedder.dimension, dtype=np.float32) / np.sqrt(HashEmbedder.dimension)


class SlowEmbedder(HashEmbedder):
    """Hash vectors, ``delay_s`` per batch (a model on another thread); ``fail`` raises."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.fail = False

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise LLMError("the embedding model failed")  # any error will do
        return await super().embed(texts)


Store = QdrantRetriever | EdgeRetriever


class Corpus:
    """A retriever, its record and an ingestor."""

    def __init__(self, retriever: Store, encoding: tiktoken.Encoding) -> None:
        self.embedder = SlowEmbedder()
        self.retriever = retriever
        self.version = CorpusVersion(
            store=self.retriever, redis=None, namespace="t", collection="c", poll_s=1
        )
        self.ingestor = Ingestor(
            embedder=self.embedder,
            retriever=self.retriever,
            chunker=TokenChunker(encoding=encoding, size=20, overlap=0),
            corpus_version=self.version,
            batch_size=4,
            collect_after_s=COLLECT_AFTER_S,
            switch_chunks=512,
        )

    async def texts(self, doc_id: str) -> list[str]:
        """What search sees of ``doc_id``."""
        found = await self.retriever.search(PROBE, 1000)
        return sorted(f.chunk.text for f in found if f.chunk.doc_id == doc_id)

    async def stored(self) -> list[dict[str, Any]]:
        """Every point's payload, seen by search or not."""
        return await self.retriever.stored()

    async def aclose(self) -> None:
        await self.ingestor.aclose()
        if isinstance(self.retriever, EdgeRetriever):
            await self.retriever.aclose()


@pytest.fixture(scope="module")
def encoding(tmp_path_factory: pytest.TempPathFactory) -> tiktoken.Encoding:
    return get_encoding("cl100k_base", tmp_path_factory.mktemp("tiktoken"))


@pytest.fixture(params=["qdrant", "edge"])
async def open_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[], Store]]:
    """Opens the store of this test anew (as a new process would): qdrant-client's engine in
    memory, or a Qdrant Edge folder (the previous opener must have closed it)."""
    client = AsyncQdrantClient(location=":memory:")

    def open_store() -> Store:
        if request.param == "edge":
            return EdgeRetriever(
                folder=tmp_path / "edge", dimension=PROBE.size, hnsw_ef=64, index_after=10**9
            )
        return QdrantRetriever(client=client, collection="c", dimension=PROBE.size)

    yield open_store
    await client.close()


async def opened(store: Store, encoding: tiktoken.Encoding) -> Corpus:
    corpus = Corpus(store, encoding)
    if isinstance(store, QdrantRetriever):
        await store.ensure_collection()
    await corpus.version.start()
    return corpus


@pytest.fixture
async def corpus(
    open_store: Callable[[], Store], encoding: tiktoken.Encoding
) -> AsyncIterator[Corpus]:
    corpus = await opened(open_store(), encoding)
    yield corpus
    await corpus.aclose()


def text(word: str, chunks: int) -> str:
    """About ``chunks`` chunks of 20 tokens, every word ``word``-prefixed."""
    return " ".join(f"{word}{i}" for i in range(chunks * 12))


def chunk_texts(corpus: Corpus, document: Document) -> list[str]:
    return sorted(c.text for c in corpus.ingestor.chunk(document))


async def watch(
    corpus: Corpus, doc_id: str, versions: dict[str, list[str]], until: asyncio.Task[object]
) -> list[str]:
    """Search until ``until`` is done; the name of the whole version each search saw. Fails on
    anything else: a gap or a mix."""
    seen = []
    while True:
        done = until.done()
        found = await corpus.texts(doc_id)
        names = [name for name, texts in versions.items() if texts == found]
        assert names, f"search saw {len(found)} chunks of {doc_id}, not one version whole"
        if not seen or seen[-1] != names[0]:
            seen.append(names[0])
        if done:
            return seen
        await asyncio.sleep(0.002)


async def test_readers_see_the_old_version_whole_until_the_switch_then_the_new(
    corpus: Corpus,
) -> None:
    old, new = Document("doc", text("old", 3), ""), Document("doc", text("new", 30), "")
    await corpus.ingestor.add([old])
    before = corpus.version.current
    corpus.embedder.delay_s = 0.01  # 8 batches: the reader searches many times meanwhile
    writing = asyncio.create_task(corpus.ingestor.add([new]))
    versions = {"old": chunk_texts(corpus, old), "new": chunk_texts(corpus, new)}
    assert await watch(corpus, "doc", versions, writing) == ["old", "new"]
    assert corpus.version.current != before
    assert await corpus.retriever.count("doc") == len(versions["new"])
    assert len(await corpus.stored()) == len(versions["old"]) + len(versions["new"])  # both
    await asyncio.sleep(2 * COLLECT_AFTER_S)  # then the old chunks go
    assert len(await corpus.stored()) == len(versions["new"])
    assert await corpus.texts("doc") == versions["new"]
    state = corpus.version.state
    assert state is not None and not state.revealed and not state.retired  # tidied


@pytest.mark.parametrize("how", ["embedding fails", "cancelled"])
async def test_a_failed_or_cancelled_write_leaves_the_old_version_and_nothing_else(
    corpus: Corpus, how: str
) -> None:
    old = Document("doc", text("old", 3), "")
    await corpus.ingestor.add([old])
    before = corpus.version.current
    corpus.embedder.delay_s = 0.01
    writing = asyncio.create_task(corpus.ingestor.add([Document("doc", text("new", 30), "")]))
    await asyncio.sleep(0.05)  # some batches are written
    if how == "cancelled":
        writing.cancel()
    else:
        corpus.embedder.fail = True
    with pytest.raises((asyncio.CancelledError, LLMError)):
        await writing
    assert await corpus.texts("doc") == chunk_texts(corpus, old)
    assert corpus.version.current == before
    assert len(await corpus.stored()) == len(chunk_texts(corpus, old))  # the staged ones went


async def test_concurrent_writes_of_one_document_end_with_the_last_switch_whole(
    corpus: Corpus,
) -> None:
    docs = [Document("doc", text(word, n), "") for word, n in [("a", 9), ("b", 4), ("c", 6)]]
    corpus.embedder.delay_s = 0.005
    writes = [asyncio.create_task(corpus.ingestor.add([d])) for d in docs]
    reports = await asyncio.gather(*writes)
    last = max(range(3), key=lambda i: reports[i].corpus_version == corpus.version.current)
    assert await corpus.texts("doc") == chunk_texts(corpus, docs[last])
    await corpus.ingestor.collect()
    assert await corpus.texts("doc") == chunk_texts(corpus, docs[last])
    assert await corpus.retriever.count() == len(chunk_texts(corpus, docs[last]))


async def test_a_delete_hides_the_document_at_once_and_its_chunks_go_after(
    corpus: Corpus,
) -> None:
    gone = Document("gone", text("g", 3), "")
    await corpus.ingestor.add([gone, Document("kept", text("k", 2), "")])
    kept = await corpus.texts("kept")
    assert await corpus.ingestor.delete("gone") == len(chunk_texts(corpus, gone))
    assert await corpus.texts("gone") == [] and await corpus.texts("kept") == kept
    await corpus.ingestor.collect()
    assert {p["doc_id"] for p in await corpus.stored()} == {"kept"}


async def test_recovery_removes_a_write_that_never_switched_and_finishes_one_that_did(
    open_store: Callable[[], Store], encoding: tiktoken.Encoding
) -> None:
    """Two dead writers, as a killed process leaves them: one died before its switch (its
    chunks are staged), one after it (its superseded chunks are still there). A new process
    (a new ``Corpus`` on the same store) recovers both at start."""
    first = await opened(open_store(), encoding)
    a_old, b_old = Document("a", text("a", 2), ""), Document("b", text("b", 2), "")
    await first.ingestor.add([a_old, b_old])
    await first.ingestor.collect()
    died_before = first.ingestor.chunk(Document("a", text("x", 5), ""))
    vectors = await first.embedder.embed([c.text for c in died_before])
    await first.retriever.upsert(died_before, vectors, {"a": "dead-write"})
    b_new = Document("b", text("y", 4), "")
    await first.ingestor.add([b_new])  # switched; its collection never ran
    if isinstance(first.retriever, EdgeRetriever):  # the process dies, its timers with it
        for collection in first.ingestor._collections:
            collection.cancel()
        await first.retriever.aclose()

    second = await opened(open_store(), encoding)
    assert await second.texts("a") == chunk_texts(second, a_old)
    assert await second.texts("b") == chunk_texts(second, b_new)
    await second.ingestor.recover()
    payloads = await second.stored()
    assert sorted(p["text"] for p in payloads) == sorted(
        chunk_texts(second, a_old) + chunk_texts(second, b_new)
    )
    assert not any(p["staged"] for p in payloads)
    assert await second.texts("b") == chunk_texts(second, b_new)
    await second.aclose()
