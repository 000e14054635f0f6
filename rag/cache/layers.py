"""What each cache layer stores: its key, its TTL and its codec (a ``LayerCodec`` that
``rag.cache.stage.CachedStage`` reads and writes through), and the corpus version that search
keys contain. Reading and writing goes through the stage, so the pipeline can fetch several
layers' keys in one round trip."""

from __future__ import annotations

import functools
import json
import logging
import math
import random
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rag.cache.codec import (
    CorruptEntryError,
    decode_json,
    decode_vector,
    encode_json,
    encode_vector,
)
from rag.cache.keys import build_key, corpus_version_key, digest, normalize_text, text_key
from rag.cache.registry import EMBEDDING, LLM, REWRITE, SEARCH, Layer
from rag.cache.stage import Cached
from rag.protocols import KVStore, Vector
from rag.types import Chunk, Completion, ScoredChunk, Usage

log = logging.getLogger(__name__)
_VERSION = re.compile(rb"[0-9a-f]{1,64}")


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


# Decoded entries, by their bytes. A hot question's entries come back byte for byte the same on
# every hit, and decoding a search entry (four chunk texts) is most of a hit's work in Python.
# Same bytes, same value: the memo can never return another entry's value; whether an entry is
# stale is still decided on every read, from its freshness fields.
_DECODED_ENTRIES = 2048


@functools.lru_cache(maxsize=_DECODED_ENTRIES)
def _decode_search_entry(raw: bytes) -> tuple[tuple[ScoredChunk, ...], dict[str, Any]]:
    entry = decode_json(raw, "search")
    return tuple(SearchResultCache.decode_hits(entry["hits"])), _freshness_of(entry)


@functools.lru_cache(maxsize=_DECODED_ENTRIES)
def _decode_answer_entry(raw: bytes) -> tuple[Completion, dict[str, Any]]:
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
    return completion, _freshness_of(entry)


@functools.lru_cache(maxsize=_DECODED_ENTRIES)
def _decode_vector_entry(raw: bytes, dimension: int) -> Vector:
    vector = decode_vector(raw, dimension)
    vector.flags.writeable = False  # shared by every reader of these bytes
    return vector


def _freshness_of(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in ("fresh_until", "compute_s") if k in entry}


@functools.lru_cache(maxsize=16384)
def _search_key(
    namespace: str, layer: str, model: str, collection: str, version: str, k: int, text: str
) -> str:
    sha = digest(normalize_text(text), {"filters": None})
    return build_key(namespace, layer, model, collection, version, f"k{k}", sha=sha)


@functools.lru_cache(maxsize=16384)
def _answer_key(
    namespace: str,
    layer: str,
    model: str,
    prompt_version: str,
    sampling: tuple[tuple[str, float | int], ...],
    text: str,
    chunks: tuple[tuple[str, str], ...],
) -> str:
    sha = digest(normalize_text(text), [list(c) for c in chunks], dict(sampling))
    return build_key(namespace, layer, model, prompt_version, sha=sha)


@dataclass(frozen=True, kw_only=True)
class EmbeddingCache:
    """query text → vector, per embedding model."""

    namespace: str
    model_id: str
    dimension: int
    ttl_s: int
    layer: Layer = EMBEDDING

    def key(self, text: str) -> str:
        return text_key(self.namespace, self.layer.segment, self.model_id, text=text)

    def decode(self, raw: bytes) -> Cached[Vector]:
        return Cached(_decode_vector_entry(raw, self.dimension))

    def encode(self, value: Vector, *, compute_s: float = 0.0) -> bytes:
        return encode_vector(value)


@dataclass(frozen=True, kw_only=True)
class SearchResultCache:
    """query → top-k chunks (ids, scores, text), per embedding model, collection, corpus version
    and k. Keyed on the normalized query text rather than its vector: the vector is a pure
    function of (text, embedding model), and a text key can be fetched before the vector is
    known, in the same round trip as the embedding entry."""

    namespace: str
    embedding_model_id: str
    collection: str
    ttl_s: int
    soft_ttl_s: int | None = None  # None: never stale before it expires
    xfetch_beta: float = 0.0  # 0: no early refresh
    layer: Layer = SEARCH

    def key(self, text: str, *, corpus_version: str, k: int) -> str:
        return _search_key(
            self.namespace,
            self.layer.segment,
            self.embedding_model_id,
            self.collection,
            corpus_version,
            k,
            text,
        )

    def decode(self, raw: bytes) -> Cached[list[ScoredChunk]]:
        hits, freshness = _decode_search_entry(raw)
        return Cached(list(hits), _is_stale(freshness, self.xfetch_beta))

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

    def encode(self, value: list[ScoredChunk], *, compute_s: float = 0.0) -> bytes:
        body = {
            "hits": self.encode_hits(value),
            **_freshness(self.soft_ttl_s or self.ttl_s, compute_s),
        }
        return encode_json("search", body)


@dataclass(frozen=True, kw_only=True)
class AnswerCache:
    """(query, retrieved chunks, prompt, sampling params) → answer, per LLM model.

    The key carries each chunk's id *and* content hash, so an answer is never served once any
    chunk it was built from changed, while answers built on untouched chunks keep hitting."""

    namespace: str
    llm_model: str
    prompt_version: str
    sampling: dict[str, float | int]
    ttl_s: int
    soft_ttl_s: int | None = None  # None: never stale before it expires
    xfetch_beta: float = 0.0  # 0: no early refresh
    layer: Layer = LLM

    def key(self, text: str, chunks: Sequence[ScoredChunk]) -> str:
        return _answer_key(
            self.namespace,
            self.layer.segment,
            self.llm_model,
            self.prompt_version,
            tuple(sorted(self.sampling.items())),
            text,
            tuple((c.chunk.chunk_id, c.chunk.content_hash) for c in chunks),
        )

    def decode(self, raw: bytes) -> Cached[Completion]:
        completion, freshness = _decode_answer_entry(raw)
        return Cached(completion, _is_stale(freshness, self.xfetch_beta))

    def encode(self, value: Completion, *, compute_s: float = 0.0) -> bytes:
        completion = value
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
        return encode_json("llm", body)


@dataclass(frozen=True, kw_only=True)
class RewriteCache:
    """(conversation history, follow-up) → standalone question, per LLM model and rewrite
    prompt version (``rag.sessions``)."""

    namespace: str
    llm_model: str
    prompt_version: str
    sampling: dict[str, float | int]
    ttl_s: int
    layer: Layer = REWRITE

    def key(self, question: str, conversation: Sequence[tuple[str, str]]) -> str:
        sha = digest([list(t) for t in conversation], normalize_text(question), self.sampling)
        return build_key(
            self.namespace, self.layer.segment, self.llm_model, self.prompt_version, sha=sha
        )

    def decode(self, raw: bytes) -> Cached[str]:
        standalone = json.loads(raw)["standalone"]
        if not isinstance(standalone, str) or not standalone:
            raise CorruptEntryError("rewrite entry holds no question")
        return Cached(standalone)

    def encode(self, value: str, *, compute_s: float = 0.0) -> bytes:
        return json.dumps({"v": 1, "standalone": value}, ensure_ascii=False).encode()


@dataclass(frozen=True, kw_only=True)
class CorpusVersion:
    """A random token that changes whenever the corpus changes; search keys contain it.

    Random rather than a counter: if the key is ever lost (eviction, a Redis restart) a fresh
    token is drawn, which can only cause misses, never resurrect a stale entry. A value that is
    not such a token (garbage written by something else) is replaced by a fresh one, which again
    can only cause misses."""

    store: KVStore
    namespace: str
    collection: str
    ttl_s: int

    @property
    def key(self) -> str:
        return corpus_version_key(self.namespace, self.collection)

    async def resolve(self, raw: bytes | None) -> str | None:
        """The version from a fetched value, creating (or repairing) it if needed; None when the
        store cannot give one now (no search cache for this request). Only a value that is there
        and is not a token is replaced: a store that did not answer in time must not make
        every waiting request draw a new version (each would orphan the others' entries)."""
        if raw is not None and _VERSION.fullmatch(raw):
            return raw.decode()
        if raw is None:  # absent, or of another type (MGET reads those as absent)
            drawn = secrets.token_hex(8).encode()
            current = await self.store.set_if_absent(self.key, drawn, self.ttl_s)
            if current is None:  # no answer from the store: try again with the next request
                return None
            if _VERSION.fullmatch(current):
                return current.decode()
        # Garbage, or a key of another type: a plain SET replaces whatever is there.
        log.warning("corpus version at %s is not a version token; replacing it", self.key)
        version = await self.bump()
        return version if self.store.available else None

    async def bump(self) -> str:
        version = secrets.token_hex(8)
        await self.store.set(self.key, version.encode(), self.ttl_s)
        return version
