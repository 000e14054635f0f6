"""report.md: one column per configuration, rows grouped in sections, then how to read it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag_bench.configs import CONFIGS, LABELS


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def usd(value: float) -> str:
    return f"${value:.6f}" if abs(value) < 0.01 else f"${value:.4f}"


def _calls_cells(c: dict[str, Any], saved: dict[str, Any] | None) -> dict[str, str]:
    return {
        "LLM layer: exact hits": pct(c["hit_rates"]["llm_exact"]),
        "LLM layer: semantic hits": pct(c["hit_rates"]["llm_semantic"]),
        "embedding layer hits": pct(c["hit_rates"]["embedding"]),
        "search layer hits": pct(c["hit_rates"]["search"]),
        "LLM calls": str(c["llm_calls"]),
        "LLM calls avoided": f"**{saved['llm_calls_avoided']}**" if saved else "-",
        "embedding calls": str(c["embedding"]["calls"]),
        "errors": str(c["errors"]),
        "wall time": f"{c['seconds']:.0f} s",
        "machine load (1-min average, start / end)": (
            f"{c['load_average']['before']:.1f} / {c['load_average']['after']:.1f}"
            if "load_average" in c
            else "-"
        ),
    }


def _latency_cells(c: dict[str, Any]) -> dict[str, str]:
    lat, cells = c["latency_ms"], {}
    for path, label in (("miss", "misses"), ("exact", "exact hits"), ("semantic", "semantic hits")):
        cells[f"{label} p50"] = ms(lat[path]["p50"]) + f" (n={lat[path]['n']})"
        cells[f"{label} p95"] = ms(lat[path]["p95"])
        cells[f"{label} p99"] = ms(lat[path]["p99"])
    return cells


def _cost_cells(c: dict[str, Any]) -> dict[str, str]:
    spent = c["tokens_spent"]
    return {
        "cache lookups per request, mean": ms(c["cache_lookup_ms"]["mean"]),
        "time on cache lookups, total": f"{c['cache_lookup_ms']['total'] / 1000:.2f} s",
        "prompt / completion tokens spent": f"{spent['prompt']:,} / {spent['completion']:,}",
        "cost (LLM + embeddings)": usd(c["cost_usd"]["total"]),
        "extra embedding calls for the cache": (
            f"{c['embedding']['extra_calls']} ({usd(c['embedding']['extra_cost_usd'])})"
        ),
        "service /stats: tokens saved, USD saved": (
            f"{c['service_stats_delta']['tokens_saved']:,.0f}, "
            f"{usd(c['service_stats_delta']['cost_saved_usd'])}"
        ),
    }


def _savings_cells(saved: dict[str, Any]) -> dict[str, str]:
    tokens, dollars = saved["tokens_saved"], saved["usd_saved"]
    return {
        "tokens saved (prompt / completion)": f"{tokens['prompt']:,} / {tokens['completion']:,}",
        "LLM dollars saved (gross)": usd(dollars["llm_gross"]),
        "embedding dollars saved (negative: added)": usd(dollars["embedding"]),
        "**net dollars saved**": f"**{usd(dollars['net'])}** ({pct(dollars['net_share'])})",
        "net saved per 1M requests like these": f"${dollars['net_per_million_requests']:,.0f}",
    }


def _memory_cells(memory: dict[str, Any]) -> dict[str, str]:
    if not memory["measured"]:
        return {}
    return {
        "cache entries": f"{memory['entries']:,}",
        "**bytes per entry**": f"**{memory['bytes_per_entry'] or 0:,}**",
        "bytes per cached answer (all its entries)": f"{memory['bytes_per_cached_answer'] or 0:,}",
        "used_memory added": f"{memory['used_memory_delta'] / 1024:,.0f} KiB",
    }


def cells(
    summary: dict[str, Any], saved: dict[str, Any] | None, *, semantic: bool
) -> dict[str, str]:
    """One configuration's column of the report, by row label."""
    column = _calls_cells(summary, saved) | _latency_cells(summary) | _cost_cells(summary)
    if saved:
        column |= _savings_cells(saved)
    if semantic:
        s = summary["semantic"]
        column["wrong semantic hits (matched another group)"] = (
            f"**{s['wrong']}** of {s['checked']}"
        )
    return column | _memory_cells(summary["memory"])


SECTIONS = {
    "Hit rates and calls": [
        "LLM layer: exact hits",
        "LLM layer: semantic hits",
        "embedding layer hits",
        "search layer hits",
        "LLM calls",
        "LLM calls avoided",
        "embedding calls",
        "errors",
        "wall time",
        "machine load (1-min average, start / end)",
    ],
    "Latency (client side)": [
        f"{label} {q}"
        for label in ("misses", "exact hits", "semantic hits")
        for q in ("p50", "p95", "p99")
    ]
    + ["cache lookups per request, mean", "time on cache lookups, total"],
    "Tokens and dollars": [
        "prompt / completion tokens spent",
        "tokens saved (prompt / completion)",
        "cost (LLM + embeddings)",
        "LLM dollars saved (gross)",
        "embedding dollars saved (negative: added)",
        "extra embedding calls for the cache",
        "**net dollars saved**",
        "net saved per 1M requests like these",
        "service /stats: tokens saved, USD saved",
    ],
    "Wrong semantic hits and Redis memory": [
        "wrong semantic hits (matched another group)",
        "cache entries",
        "**bytes per entry**",
        "bytes per cached answer (all its entries)",
        "used_memory added",
    ],
}

HOW_TO_READ = [
    "## How to read it",
    "",
    "- *Exact hits* are repeats of a question already answered in the run; *semantic hits* "
    "are answers of an earlier, similar question. A paraphrase the semantic rule rejects is a "
    "miss. A semantic hit is *wrong* when the question it matched belongs to another group of "
    'the workload ("of N" counts the hits whose both sides have a group).',
    "- Latency is measured by the client over HTTP on loopback; a miss includes the cache "
    "lookups before it.",
    "- The baseline pays for every request at its own prompt and answer. A cached "
    "configuration pays only for the requests that ran the LLM, and for every embedding call "
    "it made, so the **net** figure already subtracts what the caches add in embeddings. "
    "Redis lookups are not priced: their cost is the time shown. The service's own /stats "
    "count (tokens of the served model's tokenizer) is shown as a cross-check.",
    "- Memory: *bytes per entry* is `MEMORY USAGE` summed over the cache entries the run left "
    "in the namespace (embeddings, search results, answers, semantic entries, document tags) "
    "divided by their number; *used_memory added* is the server's view, which also holds the "
    "single-flight relay streams of the last minute.",
]


def _preamble(results: dict[str, Any]) -> list[str]:
    s, w, prices = results["settings"], results["workload"], results["prices"]
    return [
        "# Benchmark: what the caches save",
        "",
        f"Command: `{s['command']}`  ",
        f"Run from {s['started']} to {s['finished']} on {s['machine']}, {s['target']}.",
        "",
        f"Workload: {w['requests']} requests, {w['distinct_queries']} distinct questions in "
        f"{w['groups']} groups ({s['workload_source']}, seed {s['seed']}); by kind: "
        + ", ".join(f"{k} {v}" for k, v in sorted(w["kinds"].items()))
        + f". Concurrency {s['concurrency']}. LLM `{s['llm_model']}`, max tokens "
        f"{s['max_tokens']}.",
        "",
        f"Prices (`rag/config/prices.toml`, taken {prices['taken']}): `{prices['model']}` "
        f"${prices['input']} / 1M input and ${prices['output']} / 1M output tokens; embeddings "
        f"`{prices['embedding_model']}` ${prices['embedding']} / 1M tokens. Tokens are counted "
        "with tiktoken on each prompt and answer, in the price model's encoding.",
        "",
        "Each configuration replays the same workload from a cold cache (the namespace is "
        "cleared before it): **no cache** sends `cache.mode = no-cache`, **exact only** "
        "`cache.semantic = false`, **exact + semantic** `cache.semantic = true`.",
    ]


def _tables(results: dict[str, Any]) -> list[str]:
    names = list(results["configs"])
    columns = {
        n: cells(results["configs"][n], results["savings"].get(n), semantic=CONFIGS[n]["semantic"])
        for n in names
    }
    header = ["| | " + " | ".join(LABELS[n] for n in names) + " |", "|---" * (len(names) + 1) + "|"]
    lines: list[str] = []
    for title, rows in SECTIONS.items():
        present = [r for r in rows if any(r in columns[n] for n in names)]
        lines += ["", f"## {title}", "", *header]
        lines += [
            f"| {r} | " + " | ".join(columns[n].get(r, "-") for n in names) + " |" for r in present
        ]
    return lines


def _notes(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if not results["configs"]["exact_semantic"]["memory"]["measured"]:
        lines += ["", "Redis memory was not measured (give `--redis-url`)."]
    wrong = results["configs"]["exact_semantic"]["semantic"]["wrong_hits"]
    if wrong:
        lines += ["", "Wrong semantic hits:", ""]
        lines += [
            f"- {x['query']!r} got the answer of {x['matched_query']!r} ({x['similarity']})"
            for x in wrong
        ]
    return lines


def write_report(results: dict[str, Any], charts: Sequence[str], out: Path) -> None:
    """``out/report.md`` from results.json's content and the charts' file names."""
    lines = [*_preamble(results), *_tables(results), *_notes(results), "", *HOW_TO_READ, ""]
    lines += [f"![{c}]({c})" for c in charts]
    (out / "report.md").write_text("\n".join(lines) + "\n")
