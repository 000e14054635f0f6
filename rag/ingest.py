"""Ingestion: read txt/md/html, chunk by tokens with overlap, embed in batches, and change the
corpus all or nothing.

A document change writes the new chunks *staged* beside the old ones, under a new generation per
document (search does not see them), then one write of the corpus record (``switch``) makes them
current with a new corpus version and hides the chunks they supersede: a reader sees a document's
old version whole until the switch and its new version whole after it, never a gap or a mix.
The superseded chunks are deleted afterwards (``collect``), once every process follows the
switch. A write that fails, or is cancelled, before its switch changes nothing that search sees;
its staged chunks are discarded, or removed by ``recover`` at the next start if the process died.
Concurrent writes of one document: the last switch wins, whole. A folder is switched in groups of
documents (``switch_chunks``), so an interrupted ``rag ingest`` leaves each document old or new."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import tiktoken
from bs4 import BeautifulSoup

from rag.cache.invalidation import Invalidation
from rag.corpus_version import CorpusVersion, new_token
from rag.errors import (
    CacheUnavailableError,
    DocumentNotFoundError,
    InvalidInputError,
    RetrievalError,
)
from rag.protocols import DocumentStore, Embedder
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
    """Adds, replaces and deletes documents, each change all or nothing (see the module)."""

    def __init__(
        self,
        *,
        embedder: Embedder,
        retriever: DocumentStore,
        chunker: TokenChunker,
        corpus_version: CorpusVersion,
        batch_size: int,
        collect_after_s: float = 0.0,
        switch_chunks: int,
        invalidation: Invalidation | None = None,
    ) -> None:
        self._embedder = embedder
        self._retriever = retriever
        self._chunker = chunker
        self._corpus_version = corpus_version
        self._batch_size = batch_size
        # how long other processes may still search by the previous record (their poll bound)
        self._collect_after_s = collect_after_s
        self._switch_chunks = switch_chunks
        self._invalidation = invalidation
        self._collecting = asyncio.Lock()
        self._collections: set[asyncio.Task[None]] = set()

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
        """Add or replace the planned documents, a group of them at a time, each group all or
        nothing; the report is of what was switched (all of it, unless this raises)."""
        progress = progress or _NoProgress()
        replaced, version = 0, self._corpus_version.current
        try:
            for group in self._groups(plan.chunks):
                doc_ids = list(dict.fromkeys(c.doc_id for c in group))
                for doc_id in doc_ids:
                    replaced += await self._retriever.count(doc_id)
                version = await self._replace(doc_ids, group, progress)
        finally:
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
            corpus_version=version or "",
        )

    def _groups(self, chunks: Sequence[Chunk]) -> list[list[Chunk]]:
        """Whole documents, in order, about ``switch_chunks`` chunks per group."""
        groups: list[list[Chunk]] = [[]]
        for chunk in chunks:
            starts_document = not groups[-1] or groups[-1][-1].doc_id != chunk.doc_id
            if starts_document and len(groups[-1]) >= self._switch_chunks:
                groups.append([])
            groups[-1].append(chunk)
        return [g for g in groups if g]

    async def _replace(
        self, doc_ids: list[str], chunks: Sequence[Chunk], progress: Progress
    ) -> str:
        """Write staged, then switch; on any failure (or cancellation) before the switch, the
        staged chunks are discarded and the old versions stay current."""
        generations = {doc_id: new_token() for doc_id in doc_ids}
        try:
            await self._embed_and_upsert(chunks, progress, generations)
            expected = len({c.chunk_id for c in chunks})
            written = await self._retriever.written(generations.values())
            if written != expected:  # another process's recovery removed them
                raise RetrievalError(
                    f"{expected - written} of {expected} new chunks are gone from the vector "
                    "DB before the switch; nothing was changed, retry"
                )
            version = await self._corpus_version.switch(
                reveal={g: d for d, g in generations.items()}, retire=generations
            )
        except BaseException:
            await self._discard(generations.values())
            raise
        self._collect_soon()
        for doc_id in doc_ids:
            await self._drop_answers_of(doc_id)
        return version

    async def _discard(self, generations: Iterable[str]) -> None:
        try:
            await asyncio.shield(self._retriever.discard(list(generations)))
        except (RetrievalError, asyncio.CancelledError) as exc:
            log.warning("staged chunks of a failed write stay until the next start: %s", exc)

    async def _embed_and_upsert(
        self, chunks: Sequence[Chunk], progress: Progress, generations: Mapping[str, str]
    ) -> None:
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
                await self._retriever.upsert(batch, vectors, generations)
            except BaseException:
                if following is not None:
                    following.cancel()
                raise
            progress.update(len(batch))
            if following is not None:
                vectors = await following

    async def delete(self, doc_id: str) -> int:
        """Hide every chunk of ``doc_id`` in one switch; they are deleted after."""
        removed = await self._retriever.count(validate_doc_id(doc_id))
        if not removed:
            raise DocumentNotFoundError(f"no document with doc_id {doc_id!r}")
        await self._corpus_version.switch(retire={doc_id: None})
        self._collect_soon()
        await self._drop_answers_of(doc_id)
        return removed

    def _collect_soon(self) -> None:
        """Collect once other processes follow the switch (they may search by the previous
        record until then, and must still find the old chunks there)."""

        async def later() -> None:
            await asyncio.sleep(self._collect_after_s)
            try:
                await self.collect()
            except RetrievalError as exc:
                log.warning("superseded chunks stay hidden until the next collection: %s", exc)

        task = asyncio.create_task(later(), name="collect-superseded-chunks")
        self._collections.add(task)
        task.add_done_callback(self._collections.discard)

    async def collect(self) -> int:
        """Delete the chunks switches superseded and unstage the ones they made current; tidy
        the corpus record. Idempotent; how many chunks were deleted."""
        async with self._collecting:
            await self._corpus_version.refresh()
            state, deleted = self._corpus_version.state, 0
            if state is None or not state.retired:
                return 0
            for doc_id, kept in state.retired.items():
                deleted += await self._retriever.collect(doc_id, kept, list(state.revealed))
            await self._corpus_version.settle(state.retired)
            return deleted

    async def recover(self) -> None:
        """At start: remove what writes that died before their switch left staged, and collect
        what switched writes superseded."""
        state = self._corpus_version.state
        dropped = await self._retriever.drop_unswitched(list(state.revealed) if state else [])
        if dropped:
            log.warning("removed %d chunks of document writes that never completed", dropped)
        collected = await self.collect()
        if collected:
            log.info("deleted %d chunks superseded by completed document changes", collected)

    async def aclose(self) -> None:
        """Finish the collections already scheduled (each waits ``collect_after_s`` at most)."""
        await asyncio.gather(*self._collections, return_exceptions=True)

    async def _drop_answers_of(self, doc_id: str) -> None:
        """Free the answers built on a changed document now. Correctness does not depend on it
        (their keys carry the old chunks' hashes, so they can no longer be reached); memory does."""
        if self._invalidation is None:
            return
        try:
            await self._invalidation.by_tag(f"doc:{doc_id}")
        except CacheUnavailableError as exc:
            log.warning("could not drop cached answers of %s: %s", doc_id, exc)
