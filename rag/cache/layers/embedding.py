"""The embedding layer: query text → vector, per embedding model. A fixed binary layout
(``codec.encode_vector``), TTL ``RAG_EMBEDDING_TTL_S``; never stale; reads may slide the TTL
(``RAG_EMBEDDING_SLIDING_TTL``, done by ``CachedLayer``)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from rag.cache.codec import decode_vector, encode_vector
from rag.cache.keys import text_key
from rag.cache.layers.base import DECODED_ENTRIES, Cached, Layer, Models
from rag.protocols import Vector
from rag.settings import Settings

LAYER = Layer("embedding", "emb", reported=True)


@functools.lru_cache(maxsize=DECODED_ENTRIES)
def _decode(raw: bytes, dimension: int) -> Vector:
    vector = decode_vector(raw, dimension)
    vector.flags.writeable = False  # shared by every reader of these bytes
    return vector


@dataclass(frozen=True, kw_only=True)
class EmbeddingLayer:
    namespace: str
    model_id: str
    dimension: int
    ttl_s: int
    sliding: bool = False  # a read extends the entry to its full TTL again
    layer: Layer = LAYER

    @classmethod
    def from_settings(cls, settings: Settings, namespace: str, models: Models) -> EmbeddingLayer:
        return cls(
            namespace=namespace,
            model_id=models.embedding_id,
            dimension=models.dimension,
            ttl_s=settings.embedding_ttl_s,
            sliding=settings.embedding_sliding_ttl,
        )

    def key(self, text: str) -> str:
        return text_key(self.namespace, LAYER.segment, self.model_id, text=text)

    def decode(self, raw: bytes) -> Cached[Vector]:
        return Cached(_decode(raw, self.dimension))

    def encode(self, value: Vector, *, compute_s: float = 0.0) -> bytes:
        return encode_vector(value)
