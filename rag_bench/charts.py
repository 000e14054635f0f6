"""PNG charts (matplotlib, headless): hit rate over the run, latency CDF per path, cumulative
cost per configuration."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag_bench.configs import LABELS, PATHS
from rag_bench.pricing import Prices
from rag_bench.records import Record

STYLES = {"no_cache": ":", "exact": "--", "exact_semantic": "-"}  # line style per config
COLORS = {"miss": "tab:red", "exact": "tab:green", "semantic": "tab:purple"}  # colour per path


def _cost_per_request(records: Sequence[Record], prices: Prices) -> list[float]:
    return [
        (prices.llm_cost(r.prompt_tokens, r.completion_tokens) if r.generated else 0.0)
        + (prices.embedding_cost(r.query_tokens) if r.embedded else 0.0)
        for r in records
    ]


def _hit_rate(ax: Any, records: dict[str, list[Record]]) -> str:
    for name in ("exact", "exact_semantic"):
        served = np.cumsum([r.path in ("exact", "semantic") for r in records[name]])
        x = np.arange(1, len(served) + 1)
        ax.plot(x, served / x, STYLES[name], label=f"{LABELS[name]}: all hits")
    semantic = np.cumsum([r.path == "semantic" for r in records["exact_semantic"]])
    x = np.arange(1, len(semantic) + 1)
    ax.plot(x, semantic / x, color=COLORS["semantic"], label="exact + semantic: semantic hits")
    ax.set(xlabel="request", ylabel="LLM-layer hit rate so far", ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    return "Hit rate over the run (each config starts cold)"


def _latency_cdf(ax: Any, records: dict[str, list[Record]]) -> str:
    for name, recs in records.items():
        for path in PATHS:
            values = np.sort([r.latency_ms for r in recs if r.path == path])
            if len(values):
                ax.step(
                    values,
                    np.arange(1, len(values) + 1) / len(values),
                    STYLES[name],
                    where="post",
                    color=COLORS[path],
                    label=f"{LABELS[name]}: {path} (n={len(values)})",
                )
    ax.set_xscale("log")
    ax.set(xlabel="latency, ms (client side, log scale)", ylabel="share of requests", ylim=(0, 1))
    ax.legend(loc="center", fontsize=7)
    return "Latency CDF per path"


def _cost(ax: Any, records: dict[str, list[Record]], prices: Prices) -> str:
    for name, recs in records.items():
        cumulative = np.cumsum(_cost_per_request(recs, prices))
        ax.plot(np.arange(1, len(cumulative) + 1), cumulative, STYLES[name], label=LABELS[name])
    ax.set(xlabel="request", ylabel="cumulative cost, USD")
    ax.legend(loc="upper left", fontsize=8)
    return f"Cumulative cost at {prices.model} + {prices.embedding_model} prices"


def write_charts(records: dict[str, list[Record]], prices: Prices, out: Path) -> list[str]:
    """Write the charts into ``out``; return their file names, in report order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts: list[tuple[str, Callable[[Any], str]]] = [
        ("hit_rate.png", lambda ax: _hit_rate(ax, records)),
        ("latency_cdf.png", lambda ax: _latency_cdf(ax, records)),
        ("cost.png", lambda ax: _cost(ax, records, prices)),
    ]
    files = []
    for name, draw in charts:  # each draws on its axes and returns the title
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.set_title(draw(ax))
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        files.append(name)
    return files
