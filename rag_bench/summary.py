"""From one configuration's records to its figures (hit rates, latency per path, tokens and
dollars spent, wrong semantic hits), and from the three configurations to what caching saved."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rag_bench.configs import PATHS
from rag_bench.pricing import Prices
from rag_bench.records import Record
from rag_bench.workload import Query


def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "mean": None}
    p50, p95, p99 = np.percentile(np.asarray(values, dtype=float), [50, 95, 99])
    return {
        "n": len(values),
        "p50": round(float(p50), 2),
        "p95": round(float(p95), 2),
        "p99": round(float(p99), 2),
        "mean": round(float(np.mean(values)), 2),
    }


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the service's ``/stats`` counters moved by between two reads."""
    return {
        "layers": {
            layer: {
                k: after["layers"][layer][k] - before["layers"][layer].get(k, 0)
                for k in after["layers"][layer]
                if k != "hit_rate"
            }
            for layer in after["layers"]
        },
        "upstream_calls": {
            k: after["upstream_calls"][k] - before["upstream_calls"][k]
            for k in after["upstream_calls"]
        },
        "tokens_saved": after["tokens_saved"] - before["tokens_saved"],
        "cost_saved_usd": round(after["cost_saved_usd"] - before["cost_saved_usd"], 6),
    }


def share_of(records: Sequence[Record], predicate: Callable[[Record], bool]) -> dict[str, Any]:
    hits = sum(1 for r in records if predicate(r))
    return {"n": len(records), "hit_rate": round(hits / len(records), 4) if records else 0.0}


def _hit_rates(ok: Sequence[Record], paths: Counter[str], n: int) -> dict[str, float]:
    def share(count: int) -> float:
        return round(count / n, 4) if n else 0.0

    def layer_hits(layer: str) -> int:
        return sum(r.cache.get(layer) == "hit" for r in ok)

    return {
        "embedding": share(layer_hits("embedding")),
        "search": share(layer_hits("search")),
        "llm_exact": share(paths["exact"]),
        "llm_semantic": share(paths["semantic"]),
        "llm_total": share(paths["exact"] + paths["semantic"]),
    }


def _latency(ok: Sequence[Record]) -> dict[str, Any]:
    return {
        "all": percentiles([r.latency_ms for r in ok]),
        **{p: percentiles([r.latency_ms for r in ok if r.path == p]) for p in PATHS},
    }


def _mean_query_tokens(records: Sequence[Record]) -> float:
    return float(np.mean([r.query_tokens for r in records])) if records else 0.0


def _embedding_tokens(records: Sequence[Record], ok: Sequence[Record], calls: int) -> float:
    """Tokens embedded: each request's own query when it embedded, and the mean query for calls
    the client cannot pin on a request."""
    embedded = [r for r in ok if r.embedded]
    unpinned = max(0, calls - len(embedded))
    return sum(r.query_tokens for r in embedded) + unpinned * _mean_query_tokens(records)


def _embedding(
    records: Sequence[Record], ok: Sequence[Record], calls: int, prices: Prices
) -> dict[str, Any]:
    # A vector is needed for the search on every search miss; more calls than that are made for
    # the semantic layer alone (a lookup or an entry whose query vector was not at hand).
    needed = sum(r.cache.get("search") != "hit" for r in ok)
    extra_calls = max(0, calls - needed)
    tokens = _embedding_tokens(records, ok, calls)
    return {
        "calls": calls,
        "needed_for_search": needed,
        "extra_calls": extra_calls,
        "extra_cost_usd": prices.embedding_cost(extra_calls * _mean_query_tokens(records)),
        "tokens": round(tokens, 1),
        "cost_usd": prices.embedding_cost(tokens),
    }


def _lookups(ok: Sequence[Record]) -> dict[str, float]:
    lookup = [r.lookup_ms for r in ok]
    misses = [r.lookup_ms for r in ok if r.path == "miss"]
    return {
        "total": round(sum(lookup), 2),
        "mean": round(float(np.mean(lookup)), 3) if lookup else 0.0,
        "mean_on_misses": round(float(np.mean(misses)), 3) if misses else 0.0,
    }


def _semantic(ok: Sequence[Record], groups: dict[str, set[str]]) -> dict[str, Any]:
    """Semantic hits, and the wrong ones: the matched question belongs to another group (only
    hits whose both sides have a group are judged)."""
    hits = [r for r in ok if r.path == "semantic"]
    wrong, checked = [], 0
    for r in hits:
        theirs = groups.get(r.matched_query or "", set())
        if r.group is None or not theirs:
            continue
        checked += 1
        if r.group not in theirs:
            wrong.append(
                {"query": r.query, "matched_query": r.matched_query, "similarity": r.similarity}
            )
    return {
        "hits": len(hits),
        "checked": checked,
        "wrong": len(wrong),
        "wrong_rate": round(len(wrong) / checked, 4) if checked else 0.0,
        "wrong_hits": wrong,
    }


def summarize(
    records: Sequence[Record],
    *,
    stats: dict[str, Any],
    memory: dict[str, Any],
    groups: dict[str, set[str]],
    prices: Prices,
    seconds: float,
) -> dict[str, Any]:
    """One configuration's figures; ``stats`` is the service's counters moved during the run."""
    ok = [r for r in records if r.path != "error"]
    paths = Counter(r.path for r in records)
    generated = [r for r in ok if r.generated]
    prompt = sum(r.prompt_tokens for r in generated)
    completion = sum(r.completion_tokens for r in generated)
    embedding = _embedding(records, ok, int(stats["upstream_calls"]["embedding"]), prices)
    llm_usd = prices.llm_cost(prompt, completion)
    return {
        "requests": len(records),
        "errors": paths["error"],
        "seconds": round(seconds, 1),
        "paths": {p: paths[p] for p in PATHS},
        "hit_rates": _hit_rates(ok, paths, len(records)),
        "hit_rate_by_kind": {
            kind: share_of(
                [r for r in ok if r.kind == kind], lambda r: r.path in ("exact", "semantic")
            )
            for kind in sorted({r.kind for r in records})
        },
        "upstream_calls": stats["upstream_calls"],
        "llm_calls": int(stats["upstream_calls"]["llm"]),
        "generated_requests": len(generated),
        "latency_ms": _latency(ok),
        "tokens_spent": {"prompt": prompt, "completion": completion},
        "usage_spent": {
            "prompt": sum(r.usage_prompt for r in ok),
            "completion": sum(r.usage_completion for r in ok),
        },
        "embedding": embedding,
        "cost_usd": {
            "llm": llm_usd,
            "embedding": embedding["cost_usd"],
            "total": llm_usd + embedding["cost_usd"],
        },
        "cache_lookup_ms": _lookups(ok),
        "semantic": _semantic(ok, groups),
        "service_stats_delta": stats,
        "memory": memory,
    }


def savings(base: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """What ``config`` saved against ``base`` (no cache): tokens, dollars net of added costs."""
    prompt = base["tokens_spent"]["prompt"] - config["tokens_spent"]["prompt"]
    completion = base["tokens_spent"]["completion"] - config["tokens_spent"]["completion"]
    llm = base["cost_usd"]["llm"] - config["cost_usd"]["llm"]
    embedding = base["cost_usd"]["embedding"] - config["cost_usd"]["embedding"]
    net = base["cost_usd"]["total"] - config["cost_usd"]["total"]
    n = config["requests"]
    return {
        "llm_calls_avoided": base["llm_calls"] - config["llm_calls"],
        "embedding_calls_avoided": base["embedding"]["calls"] - config["embedding"]["calls"],
        "tokens_saved": {"prompt": prompt, "completion": completion, "total": prompt + completion},
        "usd_saved": {
            "llm_gross": llm,
            "embedding": embedding,  # negative when the caches made more embedding calls
            "added_embedding_cost": config["embedding"]["extra_cost_usd"],
            "net": net,
            "net_share": round(net / base["cost_usd"]["total"], 4)
            if base["cost_usd"]["total"]
            else 0.0,
            "net_per_million_requests": net / n * 1e6 if n else 0.0,
        },
        "cache_lookup_seconds_added": round(config["cache_lookup_ms"]["total"] / 1000, 3),
    }


def build_results(
    summaries: dict[str, Any], queries: Sequence[Query], settings: dict[str, Any], prices: Prices
) -> dict[str, Any]:
    """results.json without the records: settings, prices, workload, figures and savings."""
    base = summaries["no_cache"]
    return {
        "settings": settings,
        "prices": prices.as_dict(),
        "workload": {
            "requests": len(queries),
            "distinct_queries": len({q.text for q in queries}),
            "groups": len({q.group for q in queries if q.group is not None}),
            "kinds": dict(Counter(q.kind for q in queries)),
        },
        "configs": summaries,
        "savings": {
            name: savings(base, summary)
            for name, summary in summaries.items()
            if name != "no_cache"
        },
    }
