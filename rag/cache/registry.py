"""The cache layers, defined once.

Everything that names the set of layers derives from ``LAYERS``: the cache statuses an answer
reports (``LayerStatuses``), the Prometheus labels and ``/stats`` rows (``rag.metrics``), the key
segments that invalidation scans (``rag.cache.tags``), the choices of ``/cache/invalidate`` and
``rag cache invalidate`` (``INVALIDATION_TARGETS``) and the page's badges (served from
``/stats``). Adding a layer is one ``Layer(...)`` line here plus the stage that computes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rag.types import CacheStatus


@dataclass(frozen=True, slots=True)
class Layer:
    name: str  # public name: status field, metric label, invalidation target
    segment: str  # key segment: ``rag:{namespace}:{segment}:…``
    ttl_setting: str  # the ``Settings`` field that holds its TTL in seconds
    reported: bool  # one of the ``cache`` statuses of an ``/ask`` answer
    semantic: bool = False  # may be served by the semantic cache (status ``semantic``)

    @property
    def statuses(self) -> tuple[CacheStatus, ...]:
        """The statuses this layer can report."""
        return tuple(s for s in CacheStatus if s is not CacheStatus.SEMANTIC or self.semantic)


EMBEDDING = Layer("embedding", "emb", "embedding_ttl_s", reported=True)
SEARCH = Layer("search", "search", "search_ttl_s", reported=True)
LLM = Layer("llm", "llm", "llm_ttl_s", reported=True, semantic=True)
# A conversation's follow-up rewritten into a standalone question (rag.sessions); its entries
# live as long as answers do.
REWRITE = Layer("rewrite", "rewrite", "llm_ttl_s", reported=False)

LAYERS: tuple[Layer, ...] = (EMBEDDING, SEARCH, LLM, REWRITE)
REPORTED: tuple[Layer, ...] = tuple(layer for layer in LAYERS if layer.reported)
BY_NAME: dict[str, Layer] = {layer.name: layer for layer in LAYERS}

# Key segments that are not layers but can be invalidated: the semantic index's entries.
SEMANTIC_SEGMENT = "sem"
TAG_SEGMENT = "tag"
# ``/cache/invalidate {"layer": …}`` and ``rag cache invalidate --layer …``: name -> key segment.
INVALIDATION_TARGETS: dict[str, str] = {
    **{layer.name: layer.segment for layer in LAYERS},
    "semantic": SEMANTIC_SEGMENT,
}
