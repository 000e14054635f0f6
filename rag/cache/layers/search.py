"""The search layer: query → top-k chunks (ids, scores, text, content hashes), per embedding
model, collection, corpus version and k. TTL ``RAG_SEARCH_TTL_S``, stale after
``RAG_SEARCH_SOFT_TTL_S`` (served and refreshed in the background).

Keyed on the normalized query text rather than its vector: the vector is a pure function of
(text, embedding model), and a text key can be fetched before the vector is known, in the same
round trip as the embedding entry."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rag.cache.codec import decode_json, encode_json
from rag.cache.keys import build_key, digest, normalize_text
from rag.cache.layers.base import DECODED_ENTRIES, Cached, Freshness, Layer, Models, freshness_of
from rag.settings import Settings
from rag.types import Chunk, ScoredChunk

LAYER = Layer("search", "search", reported=True)


def decode_hits(hits: list[dict[str, Any]]) -> list[ScoredChunk]:
    """Search hits as stored (also in semantic entries)."""
    return [
        ScoredChunk(
            chunk=Chunk(
                doc_id=h["doc_id"],
                chunk_id=h["chunk_id"],
                text=h["text"],
                source=h["source"],
                content_hash=h["hash"],
            ),
            score=float(h["score"]),
        )
        for h in hits
    ]


def encode_hits(hits: Sequence[ScoredChunk]) -> list[dict[str, Any]]:
    return [
        {
            "doc_id": h.chunk.doc_id,
            "chunk_id": h.chunk.chunk_id,
            "text": h.chunk.text,
            "source": h.chunk.source,
            "hash": h.chunk.content_hash,
            "score": h.score,
        }
        for h in hits
    ]


@functools.lru_cache(maxsize=DECODED_ENTRIES)
def _decode(raw: bytes) -> tuple[tuple[ScoredChunk, ...], dict[str, Any]]:
    entry = decode_json(raw, "search")
    return tuple(decode_hits(entry["hits"])), freshness_of(entry)


@functools.lru_cache(maxsize=16384)  # a hot question's keys are built on every request
def _key(namespace: str, model: str, collection: str, version: str, k: int, text: str) -> str:
    sha = digest(normalize_text(text), {"filters": None})
    return build_key(namespace, LAYER.segment, model, collection, version, f"k{k}", sha=sha)


@dataclass(frozen=True, kw_only=True)
class SearchLayer:
    namespace: str
    embedding_model_id: str
    collection: str
    ttl_s: int
    freshness: Freshness
    sliding: bool = False
    layer: Layer = LAYER

    @classmethod
    def from_settings(cls, settings: Settings, namespace: str, models: Models) -> SearchLayer:
        return cls(
            namespace=namespace,
            embedding_model_id=models.embedding_id,
            collection=settings.collection,
            ttl_s=settings.search_ttl_s,
            freshness=Freshness.of(settings, settings.search_soft_ttl_s, settings.search_ttl_s),
        )

    def key(self, text: str, *, corpus_version: str, k: int) -> str:
        return _key(
            self.namespace, self.embedding_model_id, self.collection, corpus_version, k, text
        )

    def decode(self, raw: bytes) -> Cached[list[ScoredChunk]]:
        hits, fields = _decode(raw)
        return Cached(list(hits), self.freshness.is_stale(fields))

    def encode(self, value: list[ScoredChunk], *, compute_s: float = 0.0) -> bytes:
        body = {"hits": encode_hits(value), **self.freshness.fields(compute_s)}
        return encode_json("search", body)
