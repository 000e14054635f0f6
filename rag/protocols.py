"""The small interfaces the pipeline depends on. Real implementations live beside them
(``embedding``, ``retrieval``, ``generation``, ``cache.store``); tests may wrap them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from rag.types import Chunk, Completion, ScoredChunk

Vector = npt.NDArray[np.float32]


class Embedder(Protocol):
    model_id: str
    dimension: int

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        """Unit-length vectors, one per text, in order."""
        ...


class Retriever(Protocol):
    async def search(self, vector: Vector, k: int) -> list[ScoredChunk]: ...

    async def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Vector]) -> None: ...

    async def delete_document(self, doc_id: str) -> int:
        """Remove every chunk of ``doc_id``; return how many were removed."""
        ...

    async def count(self) -> int: ...


class Generator(Protocol):
    model_id: str

    @property
    def sampling(self) -> dict[str, float | int]:
        """Everything besides the prompt that changes the output; part of every LLM key."""
        ...

    async def complete(self, messages: list[dict[str, str]]) -> Completion: ...

    def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str | Completion]:
        """Yield text deltas as they arrive, then one final ``Completion`` when the model
        finished normally. Raises ``LLMError`` on failure; a stream that ends without the final
        ``Completion`` did not finish."""
        ...


class KVStore(Protocol):
    """Byte values with a mandatory TTL. Fails open: an unreachable store reads as ``None``
    (and ``available`` turns false) and drops writes, it never raises."""

    @property
    def available(self) -> bool:
        """False while the store is known to be unreachable."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def set(self, key: str, value: bytes, ttl_s: int) -> bool:
        """Whether the value was written."""
        ...

    async def repair(self, key: str) -> None:
        """Delete ``key`` if it holds a value of another kind than the store's byte values."""
        ...

    async def delete(self, *keys: str) -> int: ...
