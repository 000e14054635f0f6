"""Ingestion: read txt/md/html, chunk by tokens with overlap, embed in batches, upsert to the
vector DB, then bump the corpus version so that no search result built on the old corpus is
served again."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import tiktoken
from bs4 import BeautifulSoup

from rag.cache.invalidation import Invalidation
from rag.corpus_version import CorpusVersion
from rag.errors import CacheUnavailableError, DocumentNotFoundError, InvalidInputError
from rag.protocols import Embedder, Retriever
from rag.types import Chunk

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = {
    ".txt": "text",
    ".md": "text",
    ".markdown": "text",
    ".html": "html",
    ".htm": "html",
}
_DOC_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,199}$")
_BLANK_LINES = re.compile(r"\n\s*\n+")


class Progress(Protocol):
    """What ingestion reports chunks done to; a ``tqdm`` bar is one."""

    def update(self, n: int) -> object: ...

    def close(self) -> None: ...


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Document:
    doc_id: str
    text: str
    source: str


@dataclass(frozen=True, slots=True)
class IngestPlan:
    """Documents chunked and checked, ready to ``Ingestor.write``."""

    documents: tuple[Document, ...]
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True, slots=True)
class IngestReport:
    documents: int
    chunks: int
    replaced_chunks: int
    corpus_version: str


def html_to_text(html: str) -> str:
    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    return soup.get_text("\n")


def read_document(path: Path, root: Path | None = None) -> Document:
    """A file as a ``Document``; its id is its path relative to ``root`` (or its name)."""
    kind = SUPPORTED_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InvalidInputError(
            f"{path}: unsupported file type {path.suffix!r}; "
            f"use one of {sorted(SUPPORTED_SUFFIXES)}"
        )
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path}: not UTF-8 text") from exc
    text = html_to_text(raw) if kind == "html" else raw
    doc_id = path.relative_to(root).as_posix() if root else path.name
    return Document(doc_id=doc_id, text=text, source=str(path))


def collect_documents(paths: Iterable[Path]) -> list[Document]:
    """Files and (recursively) the supported files in folders."""
    documents: list[Document] = []
    for path in paths:
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and file.suffix.lower() in SUPPORTED_SUFFIXES:
                    documents.append(read_document(file, root=path))
        elif path.is_file():
            documents.append(read_document(path))
        else:
            raise InvalidInputError(f"{path}: no such file or folder")
    return documents


def validate_doc_id(doc_id: str) -> str:
    if not _DOC_ID.match(doc_id):
        raise InvalidInputError(
            "doc_id must be 1-200 characters of letters, digits, '_', '-', '.', '/', "
            "starting with a letter or digit"
        )
    return doc_id


class TokenChunker:
    """Splits text into windows of ``size`` tokens that overlap by ``overlap`` tokens, preferring
    to start each window at a paragraph boundary so chunks read naturally."""

    def __init__(self, *, encoding: tiktoken.Encoding, size: int, overlap: int) -> None:
        if not 0 <= overlap < size:
            raise ValueError("overlap must be smaller than size")
        self._enc = encoding
        self._size = size
        self._overlap = overlap

    def split(self, text: str) -> list[str]:
        text = _BLANK_LINES.sub("\n\n", text).strip()
        tokens = self._enc.encode(text, disallowed_special=())
        chunks: list[str] = []
        start = 0
        while start < len(tokens):
            end = min(start + self._size, len(tokens))
            piece = self._enc.decode(tokens[start:end]).strip()
            if piece:
                chunks.append(piece)
            if end == len(tokens):
                break
            start = end - self._overlap
        return chunks

    def count(self, text: str) -> int:
        return len(self._enc.encode(text, disallowed_special=()))


class Ingestor:
    """Adds, replaces and deletes documents. Replacing a document removes its old chunks first."""

    def __init__(
        self,
        *,
        embedder: Embedder,
        retriever: Retriever,
        chunker: TokenChunker,
        corpus_version: CorpusVersion,
        batch_size: int,
        invalidation: Invalidation | None = None,
    ) -> None:
        self._embedder = embedder
        self._retriever = retriever
        self._chunker = chunker
        self._corpus_version = corpus_version
        self._batch_size = batch_size
        self._invalidation = invalidation

    def chunk(self, document: Document) -> list[Chunk]:
        validate_doc_id(document.doc_id)
        texts = self._chunker.split(document.text)
        if not texts:
            raise InvalidInputError(f"document {document.doc_id!r} has no text")
        return [
            Chunk(
                doc_id=document.doc_id,
                chunk_id=f"{document.doc_id}#{i}",
                text=text,
                source=document.source,
                content_hash=hashlib.sha256(text.encode()).hexdigest(),
            )
            for i, text in enumerate(texts)
        ]

    def plan(self, documents: Sequence[Document]) -> IngestPlan:
        """Chunk everything, so that bad input fails before anything is written and a progress
        bar knows its total (``len(plan.chunks)``) without chunking twice."""
        return IngestPlan(
            documents=tuple(documents),
            chunks=tuple(c for d in documents for c in self.chunk(d)),
        )

    async def add(
        self, documents: Sequence[Document], progress: Progress | None = None
    ) -> IngestReport:
        """Add or replace ``documents``: ``plan`` then ``write``."""
        return await self.write(self.plan(documents), progress)

    async def write(self, plan: IngestPlan, progress: Progress | None = None) -> IngestReport:
        """Replace the planned documents' chunks, embedding and upserting batch by batch."""
        progress = progress or _NoProgress()
        doc_ids = list(dict.fromkeys(d.doc_id for d in plan.documents))
        replaced = 0
        for doc_id in doc_ids:
            replaced += await self._retriever.delete_document(doc_id)
        try:
            await self._embed_and_upsert(plan.chunks, progress)
        finally:
            # Also after a failure part-way: the corpus may have changed, so search entries of the
            # old version must not be served.
            version = await self._corpus_version.bump()
            for doc_id in doc_ids:
                await self._drop_answers_of(doc_id)
            progress.close()
        log.info(
            "ingested %d documents, %d chunks (corpus version %s)",
            len(plan.documents),
            len(plan.chunks),
            version,
        )
        return IngestReport(
            documents=len(plan.documents),
            chunks=len(plan.chunks),
            replaced_chunks=replaced,
            corpus_version=version,
        )

    async def _embed_and_upsert(self, chunks: Sequence[Chunk], progress: Progress) -> None:
        """Longest first, so that each batch holds texts of about one length and pads little
        (sentence-transformers sorts only within one ``encode`` call); and batch n+1 is embedded,
        on the embedder's thread, while batch n is written (Qdrant local mode commits every
        point to SQLite on its own)."""
        ordered = sorted(chunks, key=lambda c: len(c.text), reverse=True)
        batches = [
            ordered[start : start + self._batch_size]
            for start in range(0, len(ordered), self._batch_size)
        ]
        if not batches:
            return
        vectors = await self._embedder.embed([c.text for c in batches[0]])
        for i, batch in enumerate(batches):
            following = None
            if i + 1 < len(batches):
                following = asyncio.create_task(
                    self._embedder.embed([c.text for c in batches[i + 1]])
                )
                # Let it reach the embedder's thread first: a local-mode upsert never yields.
                await asyncio.sleep(0)
            try:
                await self._retriever.upsert(batch, vectors)
            except BaseException:
                if following is not None:
                    following.cancel()
                raise
            progress.update(len(batch))
            if following is not None:
                vectors = await following

    async def delete(self, doc_id: str) -> int:
        removed = await self._retriever.delete_document(validate_doc_id(doc_id))
        if not removed:
            raise DocumentNotFoundError(f"no document with doc_id {doc_id!r}")
        await self._corpus_version.bump()
        await self._drop_answers_of(doc_id)
        return removed

    async def _drop_answers_of(self, doc_id: str) -> None:
        """Free the answers built on a changed document now. Correctness does not depend on it
        (their keys carry the old chunks' hashes, so they can no longer be reached); memory does."""
        if self._invalidation is None:
            return
        try:
            await self._invalidation.by_tag(f"doc:{doc_id}")
        except CacheUnavailableError as exc:
            log.warning("could not drop cached answers of %s: %s", doc_id, exc)
