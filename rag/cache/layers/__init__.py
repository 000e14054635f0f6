"""The cache layers: one module each (``embedding``, ``search``, ``answer``, ``rewrite``), and
this registry, the one list of them.

Everything that names the set of layers derives from ``SPECS``: the wiring builds one
``CachedLayer`` per spec, and the cache statuses an answer reports (``LayerStatuses``), the
Prometheus labels and ``/stats`` rows (``rag.metrics``), the segments invalidation scans and the
choices of ``/cache/invalidate`` and ``rag cache invalidate`` (``INVALIDATION_TARGETS``) derive
from ``LAYERS``. Adding a layer is one module here, one line in ``SPECS`` (plus its settings)
and the stage that uses it."""

from __future__ import annotations

from rag.cache.layers.answer import AnswerLayer
from rag.cache.layers.base import Cached, Layer, LayerSpec, Models
from rag.cache.layers.embedding import EmbeddingLayer
from rag.cache.layers.rewrite import RewriteLayer
from rag.cache.layers.search import SearchLayer

SPECS = (EmbeddingLayer, SearchLayer, AnswerLayer, RewriteLayer)

LAYERS: tuple[Layer, ...] = tuple(spec.layer for spec in SPECS)
REPORTED: tuple[Layer, ...] = tuple(layer for layer in LAYERS if layer.reported)
BY_NAME: dict[str, Layer] = {layer.name: layer for layer in LAYERS}
EMBEDDING, SEARCH, LLM = BY_NAME["embedding"], BY_NAME["search"], BY_NAME["llm"]

# Key segments that are not layers: the semantic index's entries (invalidated like a layer) and
# the tag sets.
SEMANTIC_SEGMENT = "sem"
TAG_SEGMENT = "tag"
# ``/cache/invalidate {"layer": …}`` and ``rag cache invalidate --layer …``: name -> key segment.
INVALIDATION_TARGETS: dict[str, str] = {
    **{layer.name: layer.segment for layer in LAYERS},
    "semantic": SEMANTIC_SEGMENT,
}

__all__ = [
    "BY_NAME",
    "EMBEDDING",
    "INVALIDATION_TARGETS",
    "LAYERS",
    "LLM",
    "REPORTED",
    "SEARCH",
    "SEMANTIC_SEGMENT",
    "SPECS",
    "TAG_SEGMENT",
    "AnswerLayer",
    "Cached",
    "EmbeddingLayer",
    "Layer",
    "LayerSpec",
    "Models",
    "RewriteLayer",
    "SearchLayer",
]
