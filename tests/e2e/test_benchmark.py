"""The cost-savings benchmark (``rag_bench``, run as ``scripts/benchmark.py``): its workload
generator and accounting, a fast in-process run on the real parts, and the service counters it
relies on."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rag.embedding import SentenceTransformerEmbedder
from rag_bench.cli import FAST_SIZE, benchmark, parse_args
from rag_bench.pricing import Prices
from rag_bench.records import Record
from rag_bench.summary import summarize
from rag_bench.workload import OWN_PAIRS, Query, generate_workload, load_workload
from tests.conftest import ScriptedApp, serve_scripted
from tests.paths import ROOT

SCRIPT = ROOT / "scripts" / "benchmark.py"

# -- workload and accounting (pure) ---------------------------------------------------------


def test_generated_workload_mixes_repeats_paraphrases_and_uniques() -> None:
    def make(seed: int) -> list[Query]:
        return generate_workload(
            size=60,
            seed=seed,
            shares=(0.6, 0.2, 0.2),
            pairs=[OWN_PAIRS],  # in every clone
            zipf_s=1.1,
            distinct=None,
        )

    queries = make(3)
    assert len(queries) == 60
    assert make(3) == queries and make(4) != queries
    kinds = {k: sum(q.kind == k for q in queries) for k in ("first", "repeat", "paraphrase")}
    assert kinds["repeat"] > 0 and kinds["paraphrase"] > 0
    assert sum(q.kind == "unique" for q in queries) == 12
    texts_by_group: dict[str | None, set[str]] = {}
    for n, q in enumerate(queries):
        earlier = queries[:n]
        if q.kind == "repeat":
            assert any(e.text == q.text for e in earlier)
        if q.kind == "first" or q.kind == "unique":
            assert all(e.text != q.text for e in earlier)
        if q.kind == "paraphrase":  # asked after the question it paraphrases, in its group
            assert any(e.group == q.group and e.text != q.text for e in earlier)
            assert all(e.text != q.text for e in earlier)
        texts_by_group.setdefault(q.group, set()).add(q.text)
    # a question belongs to exactly one group; a paraphrase group holds two questions at most
    owners = [g for g, texts in texts_by_group.items() for _ in texts]
    assert len(owners) == len({q.text for q in queries})
    assert max(len(t) for t in texts_by_group.values()) <= 2


def test_a_workload_file_gives_queries_with_optional_groups(tmp_path: Path) -> None:
    path = tmp_path / "workload.jsonl"
    path.write_text(
        '{"query": "How long are answers cached?", "group": 1}\n\n'
        '{"query": "For how long is an answer cached?", "group": "1"}\n'
        '{"query": "What is Redis?"}\n'
    )
    queries = load_workload(path)
    assert [(q.text, q.group) for q in queries] == [
        ("How long are answers cached?", "1"),
        ("For how long is an answer cached?", "1"),
        ("What is Redis?", None),
    ]
    path.write_text('{"query": "ok"}\n{"text": "no query field"}\n')
    with pytest.raises(ValueError, match=":2: every line needs"):
        load_workload(path)


def test_a_semantic_hit_on_another_group_counts_as_wrong() -> None:
    def hit(query: str, group: str | None, matched: str) -> Record:
        return Record(
            index=0,
            query=query,
            group=group,
            kind="file",
            status_code=200,
            latency_ms=2.0,
            path="semantic",
            cache={"embedding": "miss", "search": "miss", "llm": "semantic"},
            matched_query=matched,
            similarity=0.97,
        )

    groups = {"How do I open a file?": {"g1"}, "How do I close a file?": {"g2"}}
    records = [
        hit("How can I open a file?", "g1", "How do I open a file?"),  # right
        hit("How can I close a file?", "g1", "How do I close a file?"),  # wrong
        hit("Closing a file?", None, "How do I close a file?"),  # unlabeled: not judged
    ]
    stats = {"upstream_calls": {"llm": 0, "embedding": 3, "search": 3}}
    prices = Prices.load("gpt-4o-mini", "text-embedding-3-small")
    summary = summarize(
        records, stats=stats, memory={"measured": False}, groups=groups, prices=prices, seconds=1
    )
    assert summary["semantic"]["hits"] == 3
    assert summary["semantic"]["checked"] == 2 and summary["semantic"]["wrong"] == 1
    assert summary["semantic"]["wrong_hits"][0]["query"] == "How can I close a file?"
    assert summary["hit_rates"]["llm_semantic"] == 1.0
    assert summary["embedding"]["extra_calls"] == 0  # three search misses needed three vectors


def test_prices_come_from_the_table() -> None:
    prices = Prices.load("gpt-4o-mini", "text-embedding-3-small")
    assert (prices.llm.input, prices.llm.output, prices.embedding) == (0.15, 0.60, 0.02)
    assert prices.llm_cost(1_000_000, 1_000_000) == pytest.approx(0.75)
    assert prices.missing == ()
    assert prices.as_dict()["taken"] != "unknown"
    free = Prices.load("no-such-model", "text-embedding-3-small")
    assert free.missing == ("no-such-model",)
    assert free.llm_cost(1_000_000, 1_000_000) == 0.0


def test_the_script_is_a_thin_wrapper_over_the_package() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "--in-process" in done.stdout and "CLEARS ITS CACHE NAMESPACE" in done.stdout


# -- a fast run on the real parts -------------------------------------------------------------


def _assert_files_written(out: Path) -> None:
    for name in ("results.json", "report.md", "workload.jsonl", "hit_rate.png", "cost.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "latency_cdf.png").read_bytes()[:4] == b"\x89PNG"


def _assert_config_figures(name: str, c: dict[str, Any], n: int) -> None:
    """One configuration's figures: consistent with each other and with the service's counts."""
    assert c["requests"] == n and c["errors"] == 0, name
    assert sum(c["paths"].values()) == n
    llm = c["service_stats_delta"]["layers"]["llm"]
    # what the client saw is what the service counted
    assert (llm["hit"], llm["semantic"]) == (c["paths"]["exact"], c["paths"]["semantic"])
    assert c["llm_calls"] == c["generated_requests"] == c["paths"]["miss"]
    for path, lat in c["latency_ms"].items():
        if lat["n"]:
            assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"], (name, path)
    assert c["latency_ms"]["all"]["n"] == n
    assert c["cost_usd"]["total"] > 0 and c["cost_usd"]["llm"] > 0
    assert 0 <= c["semantic"]["wrong"] <= c["semantic"]["checked"] <= c["semantic"]["hits"]
    memory = c["memory"]
    assert memory["measured"] and memory["entries"] > 0 and memory["bytes_per_entry"] > 0
    assert memory["entries_by_layer"]["llm"]["keys"] == memory["answers_cached"]


def _assert_caches_differ(configs: dict[str, Any], n: int) -> None:
    """No cache hits nothing; the exact cache hits every repeat, and only it; only the semantic
    configuration stores semantic entries."""
    base = configs["no_cache"]
    assert all(rate == 0 for rate in base["hit_rates"].values())
    assert base["llm_calls"] == n and base["paths"]["miss"] == n
    exact = configs["exact"]
    assert exact["hit_rates"]["llm_exact"] > 0 and exact["hit_rates"]["llm_semantic"] == 0
    assert exact["hit_rate_by_kind"]["repeat"]["hit_rate"] == 1.0
    assert exact["latency_ms"]["exact"]["p50"] < exact["latency_ms"]["miss"]["p50"]
    assert "semantic" not in exact["memory"]["entries_by_layer"]
    assert "semantic" in configs["exact_semantic"]["memory"]["entries_by_layer"]


def _assert_savings(savings: dict[str, Any], configs: dict[str, Any]) -> None:
    base = configs["no_cache"]
    for name, s in savings.items():
        c = configs[name]
        assert s["llm_calls_avoided"] == base["llm_calls"] - c["llm_calls"] > 0
        assert s["tokens_saved"]["prompt"] > 0 and s["tokens_saved"]["completion"] > 0
        assert s["usd_saved"]["llm_gross"] > 0 and s["usd_saved"]["net"] > 0
        assert s["usd_saved"]["added_embedding_cost"] >= 0
        assert s["usd_saved"]["net"] == pytest.approx(
            base["cost_usd"]["total"] - c["cost_usd"]["total"]
        )


def test_fast_in_process_run_reports_every_figure(
    tmp_path: Path,
    embedder: SentenceTransformerEmbedder,
    valkey_url: str,
    llm_base_url: str,
) -> None:
    argv = ["--in-process", "--fast", "--out", str(tmp_path), "--pairs", str(OWN_PAIRS)]
    benchmark(
        parse_args(argv),
        argv=argv,
        embedder=embedder,
        redis_url=valkey_url,
        llm_base_url=llm_base_url,
    )
    _assert_files_written(tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    n = results["workload"]["requests"]
    assert n == FAST_SIZE and results["workload"]["kinds"]["repeat"] > 0
    configs, savings = results["configs"], results["savings"]
    assert set(configs) == {"no_cache", "exact", "exact_semantic"}
    assert set(savings) == {"exact", "exact_semantic"}
    for name, c in configs.items():
        _assert_config_figures(name, c, n)
    _assert_caches_differ(configs, n)
    _assert_savings(savings, configs)
    report = (tmp_path / "report.md").read_text()
    assert "net dollars saved" in report and "bytes per entry" in report


# -- the service counters the benchmark reads ---------------------------------------------------


@pytest.fixture(scope="module")
def scripted(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder, valkey_url: str
) -> Iterator[ScriptedApp]:
    with serve_scripted(tmp_path_factory, embedder, valkey_url, "counters") as running:
        yield running


def _prometheus(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counters_move_exactly_with_known_requests(scripted: ScriptedApp) -> None:
    url = scripted.url

    def ask(query: str, **cache: Any) -> str:
        r = httpx.post(f"{url}/ask", json={"query": query, "cache": cache}, timeout=60)
        assert r.status_code == 200, r.text
        return str(r.json()["cache"]["llm"])

    stats0, prom0 = httpx.get(f"{url}/stats").json(), _prometheus(url)
    assert ask("How do I switch on the semantic cache?", semantic=True) == "miss"
    assert ask("How do I switch on the semantic cache?") == "hit"
    assert ask("How can I switch on the semantic cache?", semantic=True) == "semantic"
    assert ask("How do I switch on the semantic cache?", mode="no-cache") == "bypass"
    stats, prom = httpx.get(f"{url}/stats").json(), _prometheus(url)

    def moved(layer: str, result: str) -> float:
        return float(stats["layers"][layer][result] - stats0["layers"][layer][result])

    expected = {
        ("llm", "miss"): 1,
        ("llm", "hit"): 1,
        ("llm", "semantic"): 1,
        ("llm", "bypass"): 1,
        ("embedding", "miss"): 2,  # the first question and its paraphrase
        ("embedding", "hit"): 1,
        ("embedding", "bypass"): 1,
        ("search", "miss"): 2,
        ("search", "hit"): 1,
        ("search", "bypass"): 1,
    }
    for (layer, result), count in expected.items():
        assert moved(layer, result) == count, (layer, result)
        key = ("rag_cache_requests_total", (("layer", layer), ("result", result)))
        assert prom[key] - prom0[key] == count, key

    calls = {
        k: stats["upstream_calls"][k] - stats0["upstream_calls"][k]
        for k in stats0["upstream_calls"]
    }
    assert calls == {"llm": 2, "embedding": 3, "search": 3}
    assert scripted.llm.calls >= 2
    for name, count in (
        ("rag_llm_calls_total", 2),
        ("rag_embedding_calls_total", 3),
        ("rag_search_calls_total", 3),
    ):
        assert prom[(name, ())] - prom0[(name, ())] == count, name
    # each of the two hits saved the scripted answer's usage: 20 prompt + 7 completion tokens,
    # priced at gpt-4o-mini ($0.15 and $0.60 per 1M)
    assert stats["tokens_saved"] - stats0["tokens_saved"] == 54
    saved = prom[("rag_cost_saved_usd_total", ())] - prom0[("rag_cost_saved_usd_total", ())]
    assert saved == pytest.approx(2 * (20 * 0.15 + 7 * 0.60) / 1e6)
    assert prom[("rag_tokens_saved_total", ())] - prom0[("rag_tokens_saved_total", ())] == 54
    stage = "rag_stage_seconds_count"
    assert prom[(stage, (("stage", "llm"),))] - prom0.get((stage, (("stage", "llm"),)), 0) == 2
    assert prom[(stage, (("stage", "total"),))] - prom0.get((stage, (("stage", "total"),)), 0) == 4
