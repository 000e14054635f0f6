"""Qdrant retriever: local mode on a folder by default, a Qdrant server when a URL is set. The
same client API serves both, so the code path is the same.

Every point carries the generation of the write that made it (``generation``: one per document
per write) and is written *staged* (``staged: true``). Search sees a point unless it is staged in
a generation the corpus record has not revealed, or superseded by a document change not yet
collected (``rag.corpus_version.CorpusState``): the retriever filters by the record it last read
or wrote, so a change becomes visible whole in the one write of that record."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from qdrant_client import AsyncQdrantClient, models

from rag.corpus_version import CorpusState
from rag.errors import RetrievalError
from rag.protocols import Vector
from rag.types import Chunk, ScoredChunk

_POINT_NAMESPACE = uuid.UUID("5b0c1f0e-6d55-4c4e-9a7e-3d2f8f0c0a11")


def point_id(chunk_id: str) -> str:
    """Qdrant wants UUIDs or integers as point ids; derive a stable UUID from our chunk id."""
    return str(uuid.uuid5(_POINT_NAMESPACE, chunk_id))


_VERSION_POINT = point_id("corpus-version")


def chunk_point_id(chunk: Chunk, generation: str) -> str:
    """A chunk's point in one generation: a rewrite of a document never overwrites the points
    search still sees."""
    return point_id(f"{chunk.chunk_id}@{generation}")


def matches(key: str, value: str | bool) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def in_generations(generations: Iterable[str]) -> models.Filter:
    return models.Filter(
        must=[models.FieldCondition(key="generation", match=models.MatchAny(any=list(generations)))]
    )


def unswitched(revealed: Iterable[str]) -> models.Filter:
    """Points staged by a write that no switch made current."""
    revealed = list(revealed)
    return models.Filter(
        must=[matches("staged", True)], must_not=[in_generations(revealed)] if revealed else None
    )


def visible(state: CorpusState | None) -> models.Filter:
    """The points search sees under ``state``: not staged by a write it has not switched to,
    not superseded by a change it records as not yet collected."""
    hidden: list[models.Condition] = [unswitched(state.revealed if state else ())]
    for doc_id, kept in (state.retired if state is not None else {}).items():
        hidden.append(
            models.Filter(
                must=[matches("doc_id", doc_id)],
                must_not=[matches("generation", kept)] if kept is not None else None,
            )
        )
    return models.Filter(must_not=hidden)


def superseded(doc_id: str, kept: str | None, revealed: Iterable[str]) -> models.Filter:
    """A document's points that a switch made obsolete: all but ``kept`` and those staged by
    a write not switched yet (``revealed``: the generations switches made current)."""
    return models.Filter(
        must=[matches("doc_id", doc_id)],
        must_not=[unswitched(revealed)]
        + ([matches("generation", kept)] if kept is not None else []),
    )


def point_payload(chunk: Chunk, generation: str) -> dict[str, Any]:
    """What a point stores: the chunk, its document's generation, and ``staged`` (every point
    is written staged; ``collect`` unstages it once its switch is done)."""
    return {
        "doc_id": chunk.doc_id,
        "chunk_id": chunk.chunk_id,
        "text": chunk.text,
        "source": chunk.source,
        "hash": chunk.content_hash,
        "generation": generation,
        "staged": True,
    }


def chunk_from_payload(payload: Mapping[str, Any]) -> Chunk:
    return Chunk(
        doc_id=str(payload["doc_id"]),
        chunk_id=str(payload["chunk_id"]),
        text=str(payload["text"]),
        source=str(payload.get("source", "")),
        content_hash=str(payload["hash"]),
    )


class QdrantRetriever:
    """``Retriever`` over one Qdrant collection (cosine distance), and the ``VersionStore`` of
    that collection: its corpus version is a point of a small companion collection
    (``<collection>-meta``), written after the points it describes."""

    def __init__(self, *, client: AsyncQdrantClient, collection: str, dimension: int) -> None:
        self._client = client
        self._collection = collection
        self._meta = f"{collection}-meta"
        self._dimension = dimension
        self._visible = visible(None)  # from the record last read or written

    async def read_state(self) -> CorpusState | None:
        try:
            found = await self._client.retrieve(self._meta, ids=[_VERSION_POINT], with_payload=True)
            payload = (found[0].payload or {}) if found else {}
            state = CorpusState.from_payload(payload) if "version" in payload else None
        except Exception as exc:
            raise RetrievalError(f"cannot read the corpus version: {exc}") from exc
        if state is not None:
            self._visible = visible(state)
        return state

    async def write_state(self, state: CorpusState) -> None:
        point = models.PointStruct(id=_VERSION_POINT, vector=[1.0], payload=state.to_payload())
        try:
            await self._client.upsert(self._meta, points=[point], wait=True)
        except Exception as exc:
            raise RetrievalError(f"cannot record the corpus version: {exc}") from exc
        self._visible = visible(state)

    async def ensure_collection(self) -> None:
        try:
            if not await self._client.collection_exists(self._meta):
                await self._client.create_collection(
                    self._meta,
                    vectors_config=models.VectorParams(size=1, distance=models.Distance.DOT),
                )
            if not await self._client.collection_exists(self._collection):
                await self._client.create_collection(
                    self._collection,
                    vectors_config=models.VectorParams(
                        size=self._dimension, distance=models.Distance.COSINE
                    ),
                )
                with warnings.catch_warnings():
                    # Local mode has no payload indexes and warns so; a server uses them to
                    # filter what search sees and to find a document's chunks.
                    warnings.simplefilter("ignore", UserWarning)
                    for name, kind in [
                        ("doc_id", models.PayloadSchemaType.KEYWORD),
                        ("generation", models.PayloadSchemaType.KEYWORD),
                        ("staged", models.PayloadSchemaType.BOOL),
                    ]:
                        await self._client.create_payload_index(self._collection, name, kind)
        except Exception as exc:  # the client raises many unrelated types; all mean "unusable"
            raise RetrievalError(f"cannot prepare collection {self._collection!r}: {exc}") from exc

    async def search(self, vector: Vector, k: int) -> list[ScoredChunk]:
        try:
            response = await self._client.query_points(
                self._collection,
                query=vector.tolist(),
                query_filter=self._visible,
                limit=k,
                with_payload=True,
            )
        except Exception as exc:
            raise RetrievalError(f"vector search failed: {exc}") from exc
        return [
            ScoredChunk(chunk=chunk_from_payload(p.payload or {}), score=float(p.score))
            for p in response.points
        ]

    async def upsert(
        self, chunks: Sequence[Chunk], vectors: Sequence[Vector], generations: Mapping[str, str]
    ) -> None:
        """Write chunks staged in their document's generation (``generations``: doc_id ->
        generation): invisible until a switch reveals it."""
        points = [
            models.PointStruct(
                id=chunk_point_id(c, generations[c.doc_id]),
                vector=v.tolist(),
                payload=point_payload(c, generations[c.doc_id]),
            )
            for c, v in zip(chunks, vectors, strict=True)
        ]
        try:
            await self._client.upsert(self._collection, points=points, wait=True)
        except Exception as exc:
            raise RetrievalError(f"cannot write to the vector DB: {exc}") from exc

    async def count(self, doc_id: str | None = None) -> int:
        """Chunks search sees (of ``doc_id`` only, when given)."""
        selector = self._visible
        if doc_id is not None:
            selector = models.Filter(must=[matches("doc_id", doc_id), selector])
        return await self._count(selector, "count the collection")

    async def stored(self) -> list[dict[str, Any]]:
        """Every point's payload, seen by search or not (tests, diagnostics; a small store)."""
        records, _ = await self._client.scroll(self._collection, limit=100_000, with_payload=True)
        return [r.payload or {} for r in records]

    async def written(self, generations: Iterable[str]) -> int:
        """Points written in ``generations``."""
        return await self._count(in_generations(generations), "count written points")

    async def discard(self, generations: Iterable[str]) -> int:
        """Delete the points of ``generations`` (a write that failed before its switch)."""
        return await self._delete(in_generations(generations))

    async def collect(self, doc_id: str, kept: str | None, revealed: Sequence[str]) -> int:
        """After a switch: the points of ``kept`` stop being staged, and the document's other
        points are deleted, except those staged by a write not switched yet (``revealed``: the
        generations switches made current). Idempotent. How many were deleted."""
        try:
            if kept is not None:
                await self._client.set_payload(
                    self._collection,
                    payload={"staged": False},
                    points=in_generations([kept]),
                    wait=True,
                )
            return await self._delete(superseded(doc_id, kept, revealed))
        except RetrievalError:
            raise
        except Exception as exc:
            raise RetrievalError(f"cannot collect document {doc_id!r}: {exc}") from exc

    async def drop_unswitched(self, revealed: Sequence[str]) -> int:
        """Delete the points of writes that never switched (staged, not revealed)."""
        return await self._delete(unswitched(revealed))

    async def _delete(self, selector: models.Filter) -> int:
        found = await self._count(selector, "find points to delete")
        if found:
            try:
                await self._client.delete(
                    self._collection,
                    points_selector=models.FilterSelector(filter=selector),
                    wait=True,
                )
            except Exception as exc:
                raise RetrievalError(f"cannot delete from the vector DB: {exc}") from exc
        return found

    async def _count(self, selector: models.Filter, what: str) -> int:
        try:
            return (
                await self._client.count(self._collection, count_filter=selector, exact=True)
            ).count
        except Exception as exc:
            raise RetrievalError(f"cannot {what}: {exc}") from exc
