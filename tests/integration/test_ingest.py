"""Reading and chunking documents (real tiktoken encoding, seeded offline), and the ingestion
path: its chunks and vectors (real MiniLM, real Qdrant local mode), its overlap of embedding with
writing, and what a failure part-way leaves."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import tiktoken
import torch
from qdrant_client import AsyncQdrantClient

from rag.corpus import SAMPLE_CORPUS, sample_corpus
from rag.corpus_version import CorpusVersion
from rag.embedding import SentenceTransformerEmbedder
from rag.errors import InvalidInputError, RetrievalError
from rag.ingest import (
    Document,
    Ingestor,
    TokenChunker,
    collect_documents,
    html_to_text,
    read_document,
    validate_doc_id,
)
from rag.protocols import Embedder, Vector
from rag.retrieval import QdrantRetriever
from rag.settings import Settings
from rag.tokens import get_encoding
from rag.types import Chunk
from tests.unit.fakes import HashEmbedder


@pytest.fixture(scope="module")
def encoding(tmp_path_factory: pytest.TempPathFactory) -> tiktoken.Encoding:
    return get_encoding("cl100k_base", tmp_path_factory.mktemp("tiktoken"))


def test_encodings_load_offline_and_count_like_openai(encoding: tiktoken.Encoding) -> None:
    assert encoding.encode("hello world") == [15339, 1917]


def test_unknown_encoding_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not available offline"):
        get_encoding("p50k_base", tmp_path)


def test_chunks_respect_size_and_overlap_and_cover_the_text(encoding: tiktoken.Encoding) -> None:
    text = " ".join(f"word{i}" for i in range(1000))
    chunker = TokenChunker(encoding=encoding, size=50, overlap=10)
    chunks = chunker.split(text)
    assert len(chunks) > 10
    assert all(chunker.count(c) <= 50 for c in chunks)
    for before, after in itertools.pairwise(chunks):
        assert before.split()[-1] in after  # consecutive windows share their boundary
    assert "word0" in chunks[0] and "word999" in chunks[-1]


def test_short_text_is_one_chunk_and_blank_text_none(encoding: tiktoken.Encoding) -> None:
    chunker = TokenChunker(encoding=encoding, size=50, overlap=10)
    assert chunker.split("  A short note.\n\n\n\nSecond line. ") == [
        "A short note.\n\nSecond line."
    ]
    assert chunker.split(" \n ") == []


def test_overlap_must_be_smaller_than_size(encoding: tiktoken.Encoding) -> None:
    with pytest.raises(ValueError):
        TokenChunker(encoding=encoding, size=10, overlap=10)


def test_html_loses_markup_scripts_and_styles() -> None:
    text = html_to_text(
        "<html><head><style>p{}</style><script>alert(1)</script></head>"
        "<body><h1>Title</h1><p>Body <b>text</b>.</p></body></html>"
    )
    assert "Title" in text and "Body" in text and "text" in text
    assert "alert" not in text and "p{}" not in text and "<" not in text


def test_folders_are_read_recursively_with_relative_ids(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.md").write_text("# A")
    (tmp_path / "sub" / "b.html").write_text("<p>B</p>")
    (tmp_path / "sub" / "c.txt").write_text("C")
    (tmp_path / "ignored.pdf").write_bytes(b"%PDF")
    docs = collect_documents([tmp_path])
    assert [d.doc_id for d in docs] == ["a.md", "sub/b.html", "sub/c.txt"]
    assert docs[1].text.strip() == "B"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [("x.pdf", b"%PDF", "unsupported file type"), ("x.txt", b"\xff\xfe\x00", "not UTF-8")],
)
def test_unreadable_files_are_clear_errors(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidInputError, match=message):
        read_document(path)
    with pytest.raises(InvalidInputError, match="no such file"):
        collect_documents([tmp_path / "missing.md"])


@pytest.mark.parametrize("doc_id", ["", "../x", "/abs", "a b", "x" * 201])
def test_bad_doc_ids_are_rejected(doc_id: str) -> None:
    with pytest.raises(InvalidInputError, match="doc_id"):
        validate_doc_id(doc_id)


def _ingestor(
    embedder: Embedder, retriever: QdrantRetriever, encoding: tiktoken.Encoding, batch_size: int
) -> tuple[Ingestor, CorpusVersion]:
    version = CorpusVersion(store=retriever, redis=None, namespace="t", collection="c", poll_s=1)
    chunker = TokenChunker(encoding=encoding, size=60, overlap=12)
    ingestor = Ingestor(
        embedder=embedder,
        retriever=retriever,
        chunker=chunker,
        corpus_version=version,
        batch_size=batch_size,
        switch_chunks=512,
    )
    return ingestor, version


async def test_ingestion_writes_the_same_chunks_and_vectors_as_before(
    embedder: SentenceTransformerEmbedder, encoding: tiktoken.Encoding, tmp_path: Path
) -> None:
    """Sorting by length and overlapping batches must not change what is stored: the chunks and
    vectors the path before issue 16 wrote (document order, calls of ``batch_size``)."""
    documents = collect_documents([SAMPLE_CORPUS])
    client = AsyncQdrantClient(path=str(tmp_path / "qdrant"))
    retriever = QdrantRetriever(client=client, collection="c", dimension=embedder.dimension)
    await retriever.ensure_collection()
    ingestor, version = _ingestor(embedder, retriever, encoding, batch_size=4)
    try:
        before = await version.start()
        report = await ingestor.add(documents)
        points, _ = await client.scroll("c", limit=1000, with_payload=True, with_vectors=True)
    finally:
        await client.close()

    expected = [c for d in documents for c in ingestor.chunk(d)]  # the old order and batches
    old_vectors = [
        v
        for i in range(0, len(expected), 4)
        for v in embedder.embed_sync([c.text for c in expected[i : i + 4]])
    ]
    assert len(expected) > 3 * 4  # several batches, reordered by length
    assert report.chunks == len(expected) and report.documents == len(documents)
    assert report.corpus_version != before
    stored = {p.payload["chunk_id"]: p for p in points if p.payload}
    assert sorted(stored) == sorted(c.chunk_id for c in expected)
    for chunk, vector in zip(expected, old_vectors, strict=True):
        payload = stored[chunk.chunk_id].payload or {}
        assert (payload["doc_id"], payload["text"], payload["hash"]) == (
            chunk.doc_id,
            chunk.text,
            chunk.content_hash,
        )
        got = np.asarray(stored[chunk.chunk_id].vector, dtype=np.float32)
        # Only the padding of a batch differs, which moves a float in its last digits.
        np.testing.assert_allclose(got, vector, atol=1e-5)


class _Journal(QdrantRetriever):
    """Real Qdrant local mode in memory, and an embedder of hash vectors, both keeping a
    journal; the upsert blocks without yielding, as local mode does, and can be made to fail."""

    def __init__(self, fail_on_upsert: int | None = None) -> None:
        self._hash = HashEmbedder()
        super().__init__(
            client=AsyncQdrantClient(location=":memory:"),
            collection="c",
            dimension=self._hash.dimension,
        )
        self.events: list[str] = []
        self.upserted: list[str] = []
        self.fail_on_upsert = fail_on_upsert
        self.model_id = self._hash.model_id
        self._embeds = self._upserts = 0

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        n, self._embeds = self._embeds, self._embeds + 1
        self.events.append(f"embed {n} start")
        await asyncio.sleep(0.01)  # a model on another thread
        self.events.append(f"embed {n} end")
        return await self._hash.embed(texts)

    async def upsert(
        self, chunks: Sequence[Chunk], vectors: Sequence[Vector], generations: Mapping[str, str]
    ) -> None:
        n, self._upserts = self._upserts, self._upserts + 1
        if n == self.fail_on_upsert:
            raise RetrievalError("cannot write to the vector DB: disk full")
        self.events.append(f"upsert {n}")
        self.upserted += [c.chunk_id for c in chunks]
        await super().upsert(chunks, vectors, generations)


def _documents() -> list[Document]:
    return [
        Document(doc_id=f"d{i}", text=" ".join(f"w{i}x{j}" for j in range(40 + 25 * i)), source="")
        for i in range(4)
    ]


async def test_the_next_batch_is_embedded_while_one_is_written(
    encoding: tiktoken.Encoding,
) -> None:
    journal = _Journal()
    await journal.ensure_collection()
    ingestor, version = _ingestor(journal, journal, encoding, batch_size=2)
    await version.start()
    plan = ingestor.plan(_documents())
    report = await ingestor.write(plan)
    upserts = [e for e in journal.events if e.startswith("upsert")]
    assert len(upserts) == -(-len(plan.chunks) // 2) >= 3
    for n in range(len(upserts) - 1):  # batch n+1 is on the embedder before batch n is written
        assert journal.events.index(f"embed {n + 1} start") < journal.events.index(f"upsert {n}")
    assert sorted(journal.upserted) == sorted(c.chunk_id for c in plan.chunks)
    assert report.chunks == len(plan.chunks) == await journal.count()


async def test_a_failed_write_part_way_changes_nothing_search_sees(
    encoding: tiktoken.Encoding,
) -> None:
    """The old version of every document stays current and whole, the version does not move,
    and what the failed write had staged is gone."""
    journal = _Journal()
    await journal.ensure_collection()
    ingestor, version = _ingestor(journal, journal, encoding, batch_size=2)
    await version.start()
    old = _documents()
    await ingestor.add(old)
    before, count = version.current, await journal.count()
    journal.fail_on_upsert = journal._upserts + 1  # the second batch of the replace fails
    new = [Document(d.doc_id, d.text.replace("w", "v"), d.source) for d in old]
    with pytest.raises(RetrievalError, match="disk full"):
        await ingestor.add(new)
    await asyncio.sleep(0.05)  # an embedding left running would have finished by now
    # the embedding started for the next batch was cancelled; nothing was started after it
    assert journal.events[-1] == f"embed {journal._embeds - 1} start"  # its end never came
    assert version.current == before
    assert await journal.count() == count
    points, _ = await journal._client.scroll("c", limit=1000, with_payload=True)
    assert {p.payload["text"][:1] for p in points if p.payload} == {"w"}  # nothing staged left
    found = await journal.search((await journal.embed([old[0].text]))[0], 4)
    assert found and all(f.chunk.text.startswith("w") for f in found)


def test_use_threads_sets_the_count_of_the_thread_that_runs_the_model(
    embedder: SentenceTransformerEmbedder,
) -> None:
    """torch keeps the count per thread: setting it on the caller's thread would not reach the
    embedder's worker, which is why a batch ingest ran on one thread."""
    try:
        assert embedder.use_threads(2) == 2
        assert embedder._executor.submit(torch.get_num_threads).result() == 2
        assert embedder.use_threads(0) >= 1
    finally:
        embedder.use_threads(1)
    assert embedder._executor.submit(torch.get_num_threads).result() == 1


def test_a_first_start_ingests_this_services_own_documentation(
    encoding: tiktoken.Encoding, tmp_path: Path
) -> None:
    """From a checkout, the sample corpus is worth asking (#24): at least 50 chunks of the
    README and docs/ besides rag/sample_corpus."""
    settings = Settings(data_dir=tmp_path, seed_project_docs=True)
    documents = collect_documents(sample_corpus(settings))
    doc_ids = {d.doc_id for d in documents}
    assert {"README.md", "about.md", "semantic-v2.md"} <= doc_ids
    assert "local-model-answers.md" not in doc_ids  # the model's own answers are no source
    chunker = TokenChunker(
        encoding=encoding, size=settings.chunk_tokens, overlap=settings.chunk_overlap_tokens
    )
    assert sum(len(chunker.split(d.text)) for d in documents) >= 50
    assert sample_corpus(Settings(data_dir=tmp_path, seed_project_docs=False)) == [SAMPLE_CORPUS]
