"""The three cache layers and the corpus version. Each layer knows its key, its codec and its
TTL; reading and writing goes through a ``KVStore`` so the pipeline can fetch several layers'
keys in one round trip."""

from __future__ import annotations

import math
import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from rag.cache.codec import (
    CorruptEntryError,
    decode_json,
    decode_vector,
    encode_json,
    encode_vector,
)
from rag.cache.keys import build_key, digest, normalize_text
from rag.protocols import KVStore, Vector
from rag.types import Chunk, Completion, ScoredChunk, Usage

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Cached(Generic[T]):
    """A decoded entry. ``stale``: past its soft TTL (or picked for early refresh): serve it,
    and refresh it in the background (stale-while-revalidate)."""

    value: T
    stale: bool


def _freshness(soft_ttl_s: int, compute_s: float) -> dict[str, float]:
    return {"fresh_until": round(time.time() + soft_ttl_s, 3), "compute_s": round(compute_s, 4)}


def _is_stale(entry: dict[str, Any], xfetch_beta: float) -> bool:
    """Past ``fresh_until``, or picked early by XFetch: an entry that took ``compute_s`` to build
    is refreshed a little before its soft TTL, at a random moment that is likelier the closer the
    TTL is, so entries written together do not all expire together."""
    now = time.time()
    if xfetch_beta > 0:
        now -= float(entry.get("compute_s", 0.0)) * xfetch_beta * math.log(random.random() or 1e-12)
    return now >= float(entry.get("fresh_until", math.inf))


@dataclass(frozen=True, kw_only=True)
class EmbeddingCache:
    """query text → vector, per embedding model."""

    store: KVStore
    namespace: str
    model_id: str
    dimension: int
    ttl_s: int

    def key(self, text: str) -> str:
        return build_key(self.namespace, "emb", self.model_id, sha=digest(normalize_text(text)))

    def decode(self, raw: bytes) -> Vector:
        return decode_vector(raw, self.dimension)

    async def put(self, text: str, vector: Vector) -> None:
        await self.store.set(self.key(text), encode_vector(vector), self.ttl_s)


@dataclass(frozen=True, kw_only=True)
class SearchResultCache:
    """query → top-k chunks (ids, scores, text), per embedding model, collection, corpus version
    and k. Keyed on the normalized query text rather than its vector: the vector is a pure
    function of (text, embedding model), and a text key can be fetched before the vector is
    known, in the same round trip as the embedding entry."""

    store: KVStore
    namespace: str
    embedding_model_id: str
    collection: str
    ttl_s: int
    soft_ttl_s: int | None = None  # None: never stale before it expires
    xfetch_beta: float = 0.0  # 0: no early refresh

    def key(self, text: str, *, corpus_version: str, k: int) -> str:
        return build_key(
            self.namespace,
            "search",
            self.embedding_model_id,
            self.collection,
            corpus_version,
            f"k{k}",
            sha=digest(normalize_text(text), {"filters": None}),
        )

    def decode(self, raw: bytes) -> Cached[list[ScoredChunk]]:
        entry = decode_json(raw, "search")
        return Cached(self.decode_hits(entry["hits"]), _is_stale(entry, self.xfetch_beta))

    @staticmethod
    def decode_hits(hits: list[dict[str, Any]]) -> list[ScoredChunk]:
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

    @staticmethod
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

    async def put(self, key: str, hits: Sequence[ScoredChunk], *, compute_s: float = 0.0) -> None:
        body = {
            "hits": self.encode_hits(hits),
            **_freshness(self.soft_ttl_s or self.ttl_s, compute_s),
        }
        await self.store.set(key, encode_json("search", body), self.ttl_s)


@dataclass(frozen=True, kw_only=True)
class AnswerCache:
    """(query, retrieved chunks, prompt, sampling params) → answer, per LLM model.

    The key carries each chunk's id *and* content hash, so an answer is never served once any
    chunk it was built from changed, while answers built on untouched chunks keep hitting."""

    store: KVStore
    namespace: str
    llm_model: str
    prompt_version: str
    sampling: dict[str, float | int]
    ttl_s: int
    soft_ttl_s: int | None = None  # None: never stale before it expires
    xfetch_beta: float = 0.0  # 0: no early refresh

    def key(self, text: str, chunks: Sequence[ScoredChunk]) -> str:
        return build_key(
            self.namespace,
            "llm",
            self.llm_model,
            self.prompt_version,
            sha=digest(
                normalize_text(text),
                [(c.chunk.chunk_id, c.chunk.content_hash) for c in chunks],
                self.sampling,
            ),
        )

    def decode(self, raw: bytes) -> Cached[Completion]:
        entry = decode_json(raw, "llm")
        pieces = tuple(str(p) for p in entry["pieces"])
        if not pieces or "".join(pieces) != entry["text"]:
            raise CorruptEntryError("llm entry pieces do not add up to its text")
        completion = Completion(
            text=entry["text"],
            pieces=pieces,
            usage=Usage(**entry["usage"]),
            finish_reason=entry["finish_reason"],
            model=entry["model"],
        )
        return Cached(completion, _is_stale(entry, self.xfetch_beta))

    async def put(self, key: str, completion: Completion, *, compute_s: float = 0.0) -> None:
        body = {
            "text": completion.text,
            "pieces": list(completion.pieces),
            "usage": {
                "prompt_tokens": completion.usage.prompt_tokens,
                "completion_tokens": completion.usage.completion_tokens,
            },
            "finish_reason": completion.finish_reason,
            "model": completion.model,
            **_freshness(self.soft_ttl_s or self.ttl_s, compute_s),
        }
        await self.store.set(key, encode_json("llm", body), self.ttl_s)


@dataclass(frozen=True, kw_only=True)
class CorpusVersion:
    """A random token that changes whenever the corpus changes; search keys contain it.

    Random rather than a counter: if the key is ever lost (eviction, a Redis restart) a fresh
    token is drawn, which can only cause misses, never resurrect a stale entry."""

    store: KVStore
    namespace: str
    collection: str
    ttl_s: int

    @property
    def key(self) -> str:
        return f"rag:{self.namespace}:corpus:{self.collection}:version"

    async def resolve(self, raw: bytes | None) -> str:
        """The version from a fetched value, creating one if the key was missing."""
        if raw is not None:
            return raw.decode()
        current = await self.store.set_if_absent(
            self.key, secrets.token_hex(8).encode(), self.ttl_s
        )
        return current.decode() if current is not None else "unversioned"

    async def bump(self) -> str:
        version = secrets.token_hex(8)
        await self.store.set(self.key, version.encode(), self.ttl_s)
        return version
