"""The small interfaces the pipeline depends on. Real implementations live beside them
(``embedding``, ``retrieval``, ``generation``, ``cache.store``); tests may wrap them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
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
    """Search over the chunks a corpus record makes visible (see ``rag.retrieval``)."""

    async def search(self, vector: Vector, k: int) -> list[ScoredChunk]: ...

    async def count(self, doc_id: str | None = None) -> int:
        """Chunks search sees (of ``doc_id`` only, when given)."""
        ...


class DocumentStore(Retriever, Protocol):
    """The write side: chunks are written staged under their document's generation, made
    current by a switch of the corpus record (``rag.corpus_version``), superseded ones collected
    after. Every method raises ``RetrievalError`` when the store fails."""

    async def upsert(
        self, chunks: Sequence[Chunk], vectors: Sequence[Vector], generations: Mapping[str, str]
    ) -> None:
        """Write ``chunks`` staged, each in its document's generation (doc_id -> generation)."""
        ...

    async def written(self, generations: Iterable[str]) -> int:
        """How many points ``generations`` hold."""
        ...

    async def discard(self, generations: Iterable[str]) -> int:
        """Delete the points of ``generations``; how many."""
        ...

    async def collect(self, doc_id: str, kept: str | None, revealed: Sequence[str]) -> int:
        """Unstage ``kept`` and delete the document's other switched points; how many."""
        ...

    async def drop_unswitched(self, revealed: Sequence[str]) -> int:
        """Delete every staged point whose generation is not in ``revealed``; how many."""
        ...


class Generator(Protocol):
    model_id: str

    @property
    def sampling(self) -> dict[str, float | int | str]:
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
