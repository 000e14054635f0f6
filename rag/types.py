"""Value types passed between the stages, the caches and the service."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class CacheMode(str, enum.Enum):
    """Per-request cache control (the ``cache.mode`` field of ``/ask``)."""

    DEFAULT = "default"  # read and write
    NO_CACHE = "no-cache"  # do not read, do write
    NO_STORE = "no-store"  # read, do not write
    REFRESH = "refresh"  # recompute and overwrite

    @property
    def reads(self) -> bool:
        return self in (CacheMode.DEFAULT, CacheMode.NO_STORE)

    @property
    def writes(self) -> bool:
        return self is not CacheMode.NO_STORE


class CacheStatus(str, enum.Enum):
    """What one cache layer did for one request."""

    HIT = "hit"
    MISS = "miss"
    SEMANTIC = "semantic"  # llm layer only: served from a similar earlier question
    BYPASS = "bypass"  # not read: the request said so, or the cache store is unreachable


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document as stored in the vector DB."""

    doc_id: str
    chunk_id: str
    text: str
    source: str
    content_hash: str  # sha256 of text: answers built on this chunk are keyed on it


@dataclass(frozen=True, slots=True)
class ScoredChunk:
    """A chunk returned by a search, with its cosine similarity to the query."""

    chunk: Chunk
    score: float


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished LLM answer. ``pieces`` are the text deltas as the model produced them, so a
    cached answer replays as the same sequence of stream events."""

    text: str
    pieces: tuple[str, ...]
    usage: Usage
    finish_reason: str
    model: str


class LayerStatuses(dict[str, CacheStatus]):
    """What each cache layer did for one request, by layer name (``rag.cache.layers``)."""

    def as_dict(self) -> dict[str, str]:
        return {name: status.value for name, status in self.items()}


@dataclass(frozen=True, slots=True)
class AskOptions:
    """What a request asks for besides the query."""

    top_k: int
    mode: CacheMode = CacheMode.DEFAULT
    semantic: bool | None = None  # None: the service's default
    threshold: float | None = None  # cosine threshold of the semantic layer for this request


@dataclass(frozen=True, slots=True)
class SemanticInfo:
    """How a semantic hit matched: the similarity and the earlier question it matched."""

    similarity: float
    matched_query: str


@dataclass(slots=True)
class Answer:
    """The result of ``RagPipeline.answer``."""

    text: str
    sources: list[ScoredChunk]
    cache: LayerStatuses
    usage: Usage
    timings_ms: dict[str, float] = field(default_factory=dict)
    semantic: SemanticInfo | None = None
    request_id: str = ""  # names this answer in POST /feedback
