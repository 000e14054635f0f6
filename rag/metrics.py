"""Counters and histograms with the Prometheus names the README fixes, on a registry owned by one
pipeline (no module-level globals), plus the JSON snapshot behind ``GET /stats``."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rag.cache.layers import LAYERS
from rag.errors import RagError, error_kinds
from rag.types import CacheStatus


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._labelled: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.cache_requests = Counter(
            "rag_cache_requests",
            "Cache lookups by layer and result (hit, miss, semantic, bypass).",
            ["layer", "result"],
            registry=self.registry,
        )
        self.llm_calls = Counter(
            "rag_llm_calls", "Upstream LLM generations started.", registry=self.registry
        )
        self.embedding_calls = Counter(
            "rag_embedding_calls",
            "Embedding model invocations for queries.",
            registry=self.registry,
        )
        self.search_calls = Counter(
            "rag_search_calls", "Vector DB searches.", registry=self.registry
        )
        self.tokens_saved = Counter(
            "rag_tokens_saved",
            "Prompt and completion tokens not spent thanks to cache hits.",
            registry=self.registry,
        )
        self.cost_saved = Counter(
            "rag_cost_saved_usd",
            "LLM spend avoided by cache hits, in USD at the configured model's price.",
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "rag_stage_seconds",
            "Time spent per stage.",
            ["stage"],
            buckets=(
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
            ),
            registry=self.registry,
        )
        self.errors = Counter(
            "rag_errors",
            "Requests that ended in an error, by kind (``RagError.kind``).",
            ["kind"],
            registry=self.registry,
        )
        self.redis_available = Gauge(
            "rag_redis_available",
            "1 while the cache store is used, 0 while its circuit breaker skips it.",
            registry=self.registry,
        )
        self.semantic_gauges = {
            name: Gauge(
                f"rag_semantic_{name}",
                f"Semantic cache, per rule scope ({meaning}).",
                ["scope"],
                registry=self.registry,
            )
            for name, meaning in (
                ("judged", "candidates judged at the threshold reported"),
                ("false_hit_rate", "false hits among them"),
                ("false_hit_upper_95", "one-sided 95 % Clopper-Pearson bound of that rate"),
                ("serving", "1 while semantic hits are served"),
            )
        }
        for kind in error_kinds():
            self.errors.labels(kind)
        for layer in LAYERS:  # export zeros from the start, so rates work from the first scrape
            for result in layer.statuses:
                self.cache_requests.labels(layer.name, result.value)

    def record_cache(self, layer: str, status: CacheStatus) -> None:
        self._children(self.cache_requests, layer, status.value).inc()

    def record_semantic(self, scope: str, row: dict[str, Any]) -> None:
        """A scope's row of ``rag.semantic.outcomes.ScopeOutcomes.report`` as gauges."""
        for name, gauge in self.semantic_gauges.items():
            gauge.labels(scope).set(float(row[name]))

    def record_error(self, exc: RagError) -> None:
        self._children(self.errors, exc.kind).inc()

    def observe_stage(self, stage: str, seconds: float) -> None:
        self._children(self.stage_seconds, stage).observe(seconds)

    def _children(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once: ``labels()`` takes a lock and builds a
        tuple on every call, which adds up on the cached path."""
        key = (id(metric), labels)
        child = self._labelled.get(key)
        if child is None:
            child = self._labelled[key] = metric.labels(*labels)
        return child

    def prometheus_text(self) -> bytes:
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, Any]:
        """Per-layer counts and hit rates since start, and upstream calls made."""
        layers: dict[str, dict[str, float]] = {}
        for layer in LAYERS:
            counts = {
                s.value: self._sample("rag_cache_requests_total", layer=layer.name, result=s.value)
                for s in layer.statuses
            }
            looked_up = counts["hit"] + counts["miss"] + counts.get("semantic", 0)
            hits = counts["hit"] + counts.get("semantic", 0)
            layers[layer.name] = {
                **counts,
                "hit_rate": round(hits / looked_up, 4) if looked_up else 0.0,
            }
        return {
            "layers": layers,
            "upstream_calls": {
                "llm": self._sample("rag_llm_calls_total"),
                "embedding": self._sample("rag_embedding_calls_total"),
                "search": self._sample("rag_search_calls_total"),
            },
            "tokens_saved": self._sample("rag_tokens_saved_total"),
            "cost_saved_usd": round(self._sample("rag_cost_saved_usd_total"), 6),
        }

    def _sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0
