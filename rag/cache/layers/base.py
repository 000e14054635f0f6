"""What every layer module defines, and what they share.

A layer is one module of this package holding its whole definition: its ``Layer`` (name, key
segment, statuses), a spec class (``LayerSpec``: key, entry codec, TTLs read from settings,
freshness rule) built by ``from_settings``. ``rag.cache.aside.CachedLayer`` reads and writes
every layer through its spec."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from rag.settings import Settings
from rag.types import CacheStatus

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Layer:
    name: str  # public name: status field, metric label, invalidation target
    segment: str  # key segment: ``rag:{namespace}:{segment}:…``
    reported: bool  # one of the ``cache`` statuses of an ``/ask`` answer
    semantic: bool = False  # may be served by the semantic cache (status ``semantic``)

    @property
    def statuses(self) -> tuple[CacheStatus, ...]:
        """The statuses this layer can report."""
        return tuple(s for s in CacheStatus if s is not CacheStatus.SEMANTIC or self.semantic)


@dataclass(frozen=True, kw_only=True)
class Models:
    """What layer keys name besides settings: the models in use and the prompts' versions."""

    embedding_id: str
    dimension: int
    llm: str
    sampling: dict[str, float | int | str]
    answer_prompt: str
    rewrite_prompt: str


@dataclass(frozen=True, slots=True)
class Cached(Generic[T]):
    """A decoded entry. ``stale``: past its soft TTL (or picked for early refresh): serve it,
    and refresh it in the background (stale-while-revalidate)."""

    value: T
    stale: bool = False


class LayerSpec(Protocol[T]):
    """How one layer's values become entries and back; its TTL."""

    @property
    def layer(self) -> Layer: ...

    @property
    def ttl_s(self) -> int: ...

    @property
    def sliding(self) -> bool:
        """Whether a read extends the entry to its full TTL again."""
        ...

    def decode(self, raw: bytes) -> Cached[T]: ...

    def encode(self, value: T, *, compute_s: float) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Freshness:
    """Stale-while-revalidate: an entry is fresh for ``soft_ttl_s`` (never more than the layer's
    TTL), then served stale and refreshed; ``xfetch_beta`` > 0 refreshes a little early."""

    soft_ttl_s: int
    xfetch_beta: float = 0.0

    @classmethod
    def of(cls, settings: Settings, soft_ttl_s: int, ttl_s: int) -> Freshness:
        return cls(min(soft_ttl_s, ttl_s), settings.xfetch_beta)

    def fields(self, compute_s: float) -> dict[str, float]:
        """What an entry records to decide later whether it is stale."""
        return {
            "fresh_until": round(time.time() + self.soft_ttl_s, 3),
            "compute_s": round(compute_s, 4),
        }

    def is_stale(self, fields: dict[str, Any]) -> bool:
        """Past ``fresh_until``, or picked early by XFetch: an entry that took ``compute_s`` to
        build is refreshed a little before its soft TTL, at a random moment that is likelier
        the closer the TTL is, so entries written together do not all expire together."""
        now = time.time()
        if self.xfetch_beta > 0:
            compute_s = float(fields.get("compute_s", 0.0))
            now -= compute_s * self.xfetch_beta * math.log(random.random() or 1e-12)
        return now >= float(fields.get("fresh_until", math.inf))


def freshness_of(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in ("fresh_until", "compute_s") if k in entry}


# Decoded entries are memoized by their bytes (``functools.lru_cache`` in each layer): a hot
# question's entries come back byte for byte the same on every hit, and decoding is most of a
# hit's work in Python. Same bytes, same value; staleness is still decided on every read.
DECODED_ENTRIES = 2048
