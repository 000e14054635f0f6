"""Cost-savings benchmark: what the caches save, net of what they cost, in one run.

Replays one workload three times against the service, each time from a cold cache (the namespace
is cleared with ``POST /cache/invalidate {"all": true}`` first):

  no_cache        every request with ``cache.mode = "no-cache"`` (nothing read: the baseline)
  exact           the exact layers only (``cache.semantic = false``)
  exact_semantic  the exact layers, then the semantic layer (``cache.semantic = true``)

and reports per-layer hit rates, LLM calls avoided, latency p50/p95/p99 for misses, exact hits and
semantic hits, tokens saved (counted with tiktoken on each prompt and answer, in the price model's
encoding), dollars saved at ``rag/config/prices.toml`` net of the embedding calls the caches add,
the time spent on cache lookups, wrong semantic hits (a semantic hit whose matched question
belongs to another group of the workload) and Redis memory per entry. Writes ``results.json``,
``report.md``, ``workload.jsonl`` and PNG charts into ``--out``.

Workload: ``--workload FILE.jsonl`` (lines ``{"query": ..., "group"?: ...}``; queries of one group
deserve the same answer), or generated from ``--size`` and ``--seed``: popular questions drawn
with Zipf-distributed popularity (their second and later draws are exact repeats), paraphrases
(the other side of a positive pair from ``--pairs``, asked after its first side; the pair is one
group) and unique questions.

  python scripts/benchmark.py --in-process          # starts the app with the real local parts
  python scripts/benchmark.py --url http://127.0.0.1:8000 --redis-url redis://...
  python scripts/benchmark.py --in-process --fast   # about a minute, for CI

Against a running service this CLEARS ITS CACHE NAMESPACE three times: point it at a service of
its own. ``--in-process`` uses a fresh namespace on a private embedded Valkey.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rag.settings import Settings
from rag_bench.charts import write_charts
from rag_bench.configs import LABELS
from rag_bench.pricing import Prices, TokenCounter
from rag_bench.replay import Target, in_process_service, run_configs
from rag_bench.report import pct, usd, write_report
from rag_bench.summary import build_results
from rag_bench.workload import (
    DEFAULT_PAIRS,
    ROOT,
    Query,
    generate_workload,
    load_workload,
    write_workload,
)

log = logging.getLogger("benchmark")

DEFAULT_SIZE = 80
FAST_SIZE = 16
FAST_MAX_TOKENS = 24


# ---------------------------------------------------------------------------------------------
# Arguments


def _target_arguments(p: argparse.ArgumentParser, defaults: Settings) -> None:
    where = p.add_argument_group("target")
    where.add_argument("--url", default="http://127.0.0.1:8000", help="a running service")
    where.add_argument(
        "--in-process",
        action="store_true",
        help="start the app here on the real local parts (embedded Valkey, SmolLM2, MiniLM)",
    )
    where.add_argument(
        "--redis-url",
        default=os.environ.get("RAG_REDIS_URL") or None,
        help="the service's Redis, for the memory figures (with --url)",
    )
    where.add_argument(
        "--namespace",
        default=defaults.namespace,
        help="the service's namespace, for the memory figures (a tenant's: NAMESPACE.TENANT)",
    )
    where.add_argument(
        "--api-key",
        default=os.environ.get("RAG_BENCH_API_KEY", ""),
        help="for /ask when the service sets RAG_API_KEYS (default: RAG_BENCH_API_KEY)",
    )
    where.add_argument(
        "--admin-key",
        default=defaults.admin_api_key.get_secret_value(),
        help="for POST /cache/invalidate (default: RAG_ADMIN_API_KEY)",
    )


def _workload_arguments(p: argparse.ArgumentParser) -> None:
    work = p.add_argument_group("workload")
    work.add_argument("--workload", type=Path, help="JSONL with {'query', 'group'?} per line")
    work.add_argument("--size", type=int, help=f"generated requests (default {DEFAULT_SIZE})")
    work.add_argument("--seed", type=int, default=7)
    work.add_argument("--repeats", type=float, default=0.6, help="share of Zipf-popular draws")
    work.add_argument("--paraphrases", type=float, default=0.2, help="share of paraphrases")
    work.add_argument("--uniques", type=float, default=0.2, help="share of unique questions")
    work.add_argument("--zipf-s", type=float, default=1.1, help="Zipf exponent of popularity")
    work.add_argument("--distinct", type=int, help="popular questions to draw from")
    work.add_argument(
        "--pairs",
        type=Path,
        action="append",
        help=f"pairs JSONL {{a, b, label}} (default {DEFAULT_PAIRS.name}: held out from the "
        "semantic verifier's training)",
    )


def _run_arguments(p: argparse.ArgumentParser, defaults: Settings) -> None:
    run = p.add_argument_group("run")
    run.add_argument("--concurrency", type=int, default=1)
    run.add_argument("--fast", action="store_true", help=f"{FAST_SIZE} requests, short answers")
    run.add_argument("--max-tokens", type=int, help="answer length (in-process only)")
    run.add_argument("--llm-threads", type=int, help="llama.cpp threads (in-process only)")
    run.add_argument("--timeout", type=float, default=300.0, help="per request, seconds")
    run.add_argument("--out", type=Path, default=Path("bench-results"))
    run.add_argument(
        "--price-model",
        default=defaults.price_model or defaults.llm_model,
        help="LLM tokens are priced as this model (rag/config/prices.toml)",
    )
    run.add_argument(
        "--embedding-price-model",
        default="text-embedding-3-small",
        help="embedding calls are priced as this model (rag/config/prices.toml)",
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = Settings()
    p = argparse.ArgumentParser(
        prog="benchmark.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _target_arguments(p, defaults)
    _workload_arguments(p)
    _run_arguments(p, defaults)
    args = p.parse_args(argv)
    if args.size is None:
        args.size = FAST_SIZE if args.fast else DEFAULT_SIZE
    if args.max_tokens is None and args.fast and args.in_process:
        args.max_tokens = FAST_MAX_TOKENS
    if min(args.repeats, args.paraphrases, args.uniques) < 0 or (
        args.repeats + args.paraphrases + args.uniques <= 0
    ):
        p.error("the mix shares must be >= 0 and not all 0")
    if args.size < 1 or args.concurrency < 1:
        p.error("--size and --concurrency must be >= 1")
    return args


# ---------------------------------------------------------------------------------------------
# A run


def _queries(args: argparse.Namespace) -> tuple[list[Query], str]:
    """The workload, and where it came from (for the report)."""
    if args.workload:
        return load_workload(args.workload), str(args.workload)
    pairs = args.pairs or [DEFAULT_PAIRS]
    queries = generate_workload(
        size=args.size,
        seed=args.seed,
        shares=(args.repeats, args.paraphrases, args.uniques),
        pairs=pairs,
        zipf_s=args.zipf_s,
        distinct=args.distinct,
    )
    return queries, "generated from " + ", ".join(p.name for p in pairs)


def _token_counter(args: argparse.Namespace) -> TokenCounter:
    data_dir = Settings().data_dir
    return TokenCounter(
        llm_model=args.price_model,
        embedding_model=args.embedding_price_model,
        cache_dir=(data_dir if data_dir.is_absolute() else ROOT / data_dir) / "tiktoken",
    )


def _target(
    args: argparse.Namespace,
    stack: contextlib.ExitStack,
    *,
    embedder: Any,
    redis_url: str | None,
    llm_base_url: str,
) -> tuple[Target, str]:
    """Where the requests go, and how the report describes it."""
    if args.in_process:
        target = stack.enter_context(
            in_process_service(
                max_tokens=args.max_tokens,
                llm_threads=args.llm_threads,
                admin_key=args.admin_key,
                embedder=embedder,
                redis_url=redis_url,
                llm_base_url=llm_base_url,
            )
        )
        return target, "in-process (uvicorn in a thread, embedded Valkey, local SmolLM2, MiniLM)"
    if args.max_tokens is not None:
        log.warning("--max-tokens applies in-process only; the service keeps its own")
    target = Target(
        url=args.url.rstrip("/"),
        redis_url=args.redis_url,
        namespace=args.namespace,
        llm_model="(the service's)",
        max_tokens=None,
    )
    return target, f"service at {target.url}"


def _settings(
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    target: Target,
    *,
    started: str,
    where: str,
    queries: Sequence[Query],
    source: str,
) -> dict[str, Any]:
    """The settings section of results.json."""
    command = ["python scripts/benchmark.py", *(argv if argv is not None else sys.argv[1:])]
    return {
        "command": " ".join(command),
        "started": started,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{os.cpu_count()} CPU cores",
        "target": where,
        "in_process": bool(args.in_process),
        "concurrency": args.concurrency,
        "seed": args.seed,
        "size": len(queries),
        "mix": {"repeats": args.repeats, "paraphrases": args.paraphrases, "uniques": args.uniques},
        "zipf_s": args.zipf_s,
        "workload_source": source,
        "llm_model": target.llm_model,
        "max_tokens": target.max_tokens if target.max_tokens is not None else "(the service's)",
        "namespace": target.namespace,
    }


def benchmark(
    args: argparse.Namespace,
    *,
    argv: Sequence[str] | None = None,
    embedder: Any = None,
    redis_url: str | None = None,
    llm_base_url: str = "",
) -> dict[str, Any]:
    """Run the three configurations and write the outputs; return the results. ``embedder``,
    ``redis_url`` and ``llm_base_url`` let a test reuse parts it has already started."""
    queries, source = _queries(args)
    prices = Prices.load(args.price_model, args.embedding_price_model)
    tokens = _token_counter(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    write_workload(queries, out / "workload.jsonl")
    with contextlib.ExitStack() as stack:
        target, where = _target(
            args, stack, embedder=embedder, redis_url=redis_url, llm_base_url=llm_base_url
        )
        summaries, records = asyncio.run(
            run_configs(
                target,
                queries,
                concurrency=args.concurrency,
                admin_key=args.admin_key,
                api_key=args.api_key,
                prices=prices,
                tokens=tokens,
                timeout_s=args.timeout,
            )
        )
    settings = _settings(
        args, argv, target, started=started, where=where, queries=queries, source=source
    )
    results = build_results(summaries, queries, settings, prices)
    results["records"] = {name: [asdict(r) for r in recs] for name, recs in records.items()}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_report(results, write_charts(records, prices, out), out)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    results = benchmark(args, argv=argv)
    for name, s in results["savings"].items():
        c = results["configs"][name]
        print(
            f"{LABELS[name]:>16}: LLM hit rate {pct(c['hit_rates']['llm_total'])} "
            f"(semantic {pct(c['hit_rates']['llm_semantic'])}), "
            f"{s['llm_calls_avoided']} LLM calls avoided, net {usd(s['usd_saved']['net'])} "
            f"saved ({pct(s['usd_saved']['net_share'])}), "
            f"wrong semantic hits {c['semantic']['wrong']}"
        )
    print(f"wrote {args.out / 'report.md'} and {args.out / 'results.json'}")
    return 0
