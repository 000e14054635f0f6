"""The answer layer (``llm``): (query, retrieved chunks, prompt, sampling params) → answer, per
LLM model, stored as the model's original stream pieces so a replay streams as it was generated.
TTL ``RAG_LLM_TTL_S``, stale after ``RAG_LLM_SOFT_TTL_S``; may be served by the semantic cache.

The key carries each chunk's id *and* content hash, so an answer is never served once any chunk
it was built from changed, while answers built on untouched chunks keep hitting."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rag.cache.codec import CorruptEntryError, decode_json, encode_json
from rag.cache.keys import build_key, digest, normalize_text
from rag.cache.layers.base import DECODED_ENTRIES, Cached, Freshness, Layer, Models, freshness_of
from rag.settings import Settings
from rag.types import Completion, ScoredChunk, Usage

LAYER = Layer("llm", "llm", reported=True, semantic=True)


@functools.lru_cache(maxsize=DECODED_ENTRIES)
def _decode(raw: bytes) -> tuple[Completion, dict[str, Any]]:
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
    return completion, freshness_of(entry)


@functools.lru_cache(maxsize=16384)  # a hot question's keys are built on every request
def _key(
    namespace: str,
    model: str,
    prompt_version: str,
    sampling: tuple[tuple[str, float | int | str], ...],
    text: str,
    chunks: tuple[tuple[str, str], ...],
) -> str:
    sha = digest(normalize_text(text), [list(c) for c in chunks], dict(sampling))
    return build_key(namespace, LAYER.segment, model, prompt_version, sha=sha)


@dataclass(frozen=True, kw_only=True)
class AnswerLayer:
    namespace: str
    llm_model: str
    prompt_version: str
    sampling: dict[str, float | int | str]
    ttl_s: int
    freshness: Freshness
    sliding: bool = False
    layer: Layer = LAYER

    @classmethod
    def from_settings(cls, settings: Settings, namespace: str, models: Models) -> AnswerLayer:
        return cls(
            namespace=namespace,
            llm_model=models.llm,
            prompt_version=models.answer_prompt,
            sampling=models.sampling,
            ttl_s=settings.llm_ttl_s,
            freshness=Freshness.of(settings, settings.llm_soft_ttl_s, settings.llm_ttl_s),
        )

    def key(self, text: str, chunks: Sequence[ScoredChunk]) -> str:
        return _key(
            self.namespace,
            self.llm_model,
            self.prompt_version,
            tuple(sorted(self.sampling.items())),
            text,
            tuple((c.chunk.chunk_id, c.chunk.content_hash) for c in chunks),
        )

    def decode(self, raw: bytes) -> Cached[Completion]:
        completion, fields = _decode(raw)
        return Cached(completion, self.freshness.is_stale(fields))

    def encode(self, value: Completion, *, compute_s: float = 0.0) -> bytes:
        body = {
            "text": value.text,
            "pieces": list(value.pieces),
            "usage": {
                "prompt_tokens": value.usage.prompt_tokens,
                "completion_tokens": value.usage.completion_tokens,
            },
            "finish_reason": value.finish_reason,
            "model": value.model,
            **self.freshness.fields(compute_s),
        }
        return encode_json("llm", body)
