"""The rewrite layer: (conversation history, follow-up) → standalone question, per LLM model and
rewrite prompt version (``rag.sessions``). TTL ``RAG_REWRITE_TTL_S``. Not one of an answer's
reported statuses, but counted, shown in ``/stats`` and invalidated like the others."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rag.cache.codec import CorruptEntryError, decode_json, encode_json
from rag.cache.keys import build_key, digest, normalize_text
from rag.cache.layers.base import Cached, Layer, Models
from rag.settings import Settings

LAYER = Layer("rewrite", "rewrite", reported=False)


@dataclass(frozen=True, kw_only=True)
class RewriteLayer:
    namespace: str
    llm_model: str
    prompt_version: str
    sampling: dict[str, float | int | str]
    ttl_s: int
    sliding: bool = False
    layer: Layer = LAYER

    @classmethod
    def from_settings(cls, settings: Settings, namespace: str, models: Models) -> RewriteLayer:
        return cls(
            namespace=namespace,
            llm_model=models.llm,
            prompt_version=models.rewrite_prompt,
            sampling=models.sampling,
            ttl_s=settings.rewrite_ttl_s,
        )

    def key(self, question: str, conversation: Sequence[tuple[str, str]]) -> str:
        sha = digest([list(t) for t in conversation], normalize_text(question), self.sampling)
        return build_key(
            self.namespace, LAYER.segment, self.llm_model, self.prompt_version, sha=sha
        )

    def decode(self, raw: bytes) -> Cached[str]:
        standalone = decode_json(raw, "rewrite").get("standalone")
        if not isinstance(standalone, str) or not standalone:
            raise CorruptEntryError("rewrite entry holds no question")
        return Cached(standalone)

    def encode(self, value: str, *, compute_s: float = 0.0) -> bytes:
        return encode_json("rewrite", {"standalone": value})
