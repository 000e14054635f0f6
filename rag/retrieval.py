"""Qdrant retriever: local mode on a folder by default, a Qdrant server when a URL is set. The
same client API serves both, so the code path is the same."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Sequence
from typing import Any

from qdrant_client import AsyncQdrantClient, models

from rag.errors import RetrievalError
from rag.protocols import Vector
from rag.types import Chunk, ScoredChunk

_POINT_NAMESPACE = uuid.UUID("5b0c1f0e-6d55-4c4e-9a7e-3d2f8f0c0a11")


def point_id(chunk_id: str) -> str:
    """Qdrant wants UUIDs or integers as point ids; derive a stable UUID from our chunk id."""
    return str(uuid.uuid5(_POINT_NAMESPACE, chunk_id))


_VERSION_POINT = point_id("corpus-version")


class QdrantRetriever:
    """``Retriever`` over one Qdrant collection (cosine distance), and the ``VersionStore`` of
    that collection: its corpus version is a point of a small companion collection
    (``<collection>-meta``), written after the points it describes."""

    def __init__(self, *, client: AsyncQdrantClient, collection: str, dimension: int) -> None:
        self._client = client
        self._collection = collection
        self._meta = f"{collection}-meta"
        self._dimension = dimension

    async def read_version(self) -> str | None:
        try:
            found = await self._client.retrieve(self._meta, ids=[_VERSION_POINT], with_payload=True)
        except Exception as exc:
            raise RetrievalError(f"cannot read the corpus version: {exc}") from exc
        version = (found[0].payload or {}).get("version") if found else None
        return str(version) if version is not None else None

    async def write_version(self, version: str) -> None:
        point = models.PointStruct(id=_VERSION_POINT, vector=[1.0], payload={"version": version})
        try:
            await self._client.upsert(self._meta, points=[point], wait=True)
        except Exception as exc:
            raise RetrievalError(f"cannot record the corpus version: {exc}") from exc

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
                    # Local mode has no payload indexes and warns so; a server uses this one for
                    # deleting a document's chunks by doc_id.
                    warnings.simplefilter("ignore", UserWarning)
                    await self._client.create_payload_index(
                        self._collection, "doc_id", models.PayloadSchemaType.KEYWORD
                    )
        except Exception as exc:  # the client raises many unrelated types; all mean "unusable"
            raise RetrievalError(f"cannot prepare collection {self._collection!r}: {exc}") from exc

    async def search(self, vector: Vector, k: int) -> list[ScoredChunk]:
        try:
            response = await self._client.query_points(
                self._collection, query=vector.tolist(), limit=k, with_payload=True
            )
        except Exception as exc:
            raise RetrievalError(f"vector search failed: {exc}") from exc
        return [
            ScoredChunk(chunk=_chunk_from_payload(p.payload or {}), score=float(p.score))
            for p in response.points
        ]

    async def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Vector]) -> None:
        points = [
            models.PointStruct(
                id=point_id(c.chunk_id),
                vector=v.tolist(),
                payload={
                    "doc_id": c.doc_id,
                    "chunk_id": c.chunk_id,
                    "text": c.text,
                    "source": c.source,
                    "hash": c.content_hash,
                },
            )
            for c, v in zip(chunks, vectors, strict=True)
        ]
        try:
            await self._client.upsert(self._collection, points=points, wait=True)
        except Exception as exc:
            raise RetrievalError(f"cannot write to the vector DB: {exc}") from exc

    async def delete_document(self, doc_id: str) -> int:
        selector = models.Filter(
            must=[models.FieldCondition(key="doc_id", match=models.MatchValue(value=doc_id))]
        )
        try:
            found = await self._client.count(self._collection, count_filter=selector, exact=True)
            if found.count:
                await self._client.delete(
                    self._collection,
                    points_selector=models.FilterSelector(filter=selector),
                    wait=True,
                )
        except Exception as exc:
            raise RetrievalError(f"cannot delete document {doc_id!r}: {exc}") from exc
        return found.count

    async def count(self) -> int:
        try:
            return (await self._client.count(self._collection, exact=True)).count
        except Exception as exc:
            raise RetrievalError(f"cannot count the collection: {exc}") from exc


def _chunk_from_payload(payload: dict[str, Any]) -> Chunk:
    return Chunk(
        doc_id=str(payload["doc_id"]),
        chunk_id=str(payload["chunk_id"]),
        text=str(payload["text"]),
        source=str(payload.get("source", "")),
        content_hash=str(payload["hash"]),
    )
