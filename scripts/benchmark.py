"""Cost-savings benchmark: what the caches save, net of what they cost, in one run.

Replays one workload three times against the service, each time from a cold cache (the namespace
is cleared with ``POST /cache/invalidate {"all": true}`` first):

  no_cache        every request with ``cache.mode = "no-cache"`` (nothing read: the baseline)
  exact           the exact layers only (``cache.semantic = false``)
  exact_semantic  the exact layers, then the semantic layer (``cache.semantic = true``)

and reports per-layer hit rates, LLM calls avoided, latency p50/p95/p99 for misses, exact hits and
semantic hits, tokens saved (counted with tiktoken on each prompt and answer, in the price model's
encoding), dollars saved at ``config/prices.toml`` net of the embedding calls the caches add, the
time spent on cache lookups, wrong semantic hits (a semantic hit whose matched question belongs to
another group of the workload) and Redis memory per entry. Writes ``results.json``,
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
import random
import sys
import tempfile
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis.asyncio as aioredis
import tiktoken
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.prompt import build_messages
from rag.settings import PRICES_FILE, Settings
from rag.tokens import SHIPPED_ENCODINGS, get_encoding
from rag.types import Chunk, ScoredChunk

log = logging.getLogger("benchmark")

ROOT = Path(__file__).resolve().parent.parent
# Paraphrases: QQP's dev pairs where the shared data sits beside the repository; otherwise the
# repository's own labelled pairs, so that a bare clone still runs.
SHARED_PAIRS = ROOT.parent / "shared" / "data" / "pairs" / "qqp-dev.jsonl"
OWN_PAIRS = ROOT / "tests" / "data" / "semantic_traps.jsonl"
DEFAULT_PAIRS = SHARED_PAIRS if SHARED_PAIRS.exists() else OWN_PAIRS
DEFAULT_SIZE = 80
FAST_SIZE = 16
FAST_MAX_TOKENS = 24

# name -> the request's "cache" options
CONFIGS: dict[str, dict[str, Any]] = {
    "no_cache": {"mode": "no-cache", "semantic": False},
    "exact": {"mode": "default", "semantic": False},
    "exact_semantic": {"mode": "default", "semantic": True},
}
LABELS = {"no_cache": "no cache", "exact": "exact only", "exact_semantic": "exact + semantic"}
PATHS = ("miss", "exact", "semantic")  # how a request's answer was served
# key segment -> layer, for the cache entries whose memory is measured
CACHE_LAYERS = {
    "emb": "embedding",
    "search": "search",
    "llm": "llm",
    "sem": "semantic",
    "tag": "tag",
}


# ---------------------------------------------------------------------------------------------
# Workload


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    group: str | None = None
    kind: str = "file"  # generated: first | repeat | paraphrase | unique


def load_workload(path: Path) -> list[Query]:
    queries = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row.get("query"), str) or not row["query"].strip():
            raise ValueError(f"{path}:{n}: every line needs a non-empty 'query'")
        group = row.get("group")
        queries.append(Query(text=row["query"], group=None if group is None else str(group)))
    if not queries:
        raise ValueError(f"{path} holds no queries")
    return queries


def _usable(text: str) -> bool:
    return 12 <= len(text) <= 200 and "\n" not in text


def load_pairs(paths: Sequence[Path]) -> tuple[list[tuple[str, str]], list[str]]:
    """Positive pairs whose two questions differ and belong to no other pair, and the other
    questions (from negative pairs), each once."""
    positives: list[tuple[str, str]] = []
    others: list[str] = []
    seen: set[str] = set()
    for path in paths:
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            a, b = str(row["a"]).strip(), str(row["b"]).strip()
            if row.get("label") == 1:
                if (
                    _usable(a)
                    and _usable(b)
                    and a.lower() != b.lower()
                    and not {a.lower(), b.lower()} & seen
                ):
                    positives.append((a, b))
                seen |= {a.lower(), b.lower()}
            else:
                others += [q for q in (a, b) if _usable(q)]
    uniques, taken = [], set(seen)
    for q in others:
        if q.lower() not in taken:
            taken.add(q.lower())
            uniques.append(q)
    return positives, uniques


def generate_workload(
    *,
    size: int,
    seed: int,
    shares: tuple[float, float, float],
    pairs: Sequence[Path],
    zipf_s: float,
    distinct: int | None,
) -> list[Query]:
    """``size`` queries: popular questions by Zipf weight (first draw, then exact repeats),
    paraphrases of popular questions already asked, and unique questions, shuffled together."""
    rng = random.Random(seed)
    positives, uniques = load_pairs(pairs)
    rng.shuffle(positives)
    rng.shuffle(uniques)
    total = sum(shares)
    n_para = round(size * shares[1] / total)
    n_unique = round(size * shares[2] / total)
    n_popular = size - n_para - n_unique
    # Enough popular questions that every paraphrase slot finds one already asked.
    pool = distinct or max(1, n_para + 2, round(0.35 * n_popular))
    if pool > len(positives) or n_unique > len(uniques):
        raise ValueError("not enough questions in the pairs files for this size")
    popular = positives[:pool]
    weights = [1.0 / (rank**zipf_s) for rank in range(1, pool + 1)]
    kinds = ["popular"] * n_popular + ["paraphrase"] * n_para + ["unique"] * n_unique
    rng.shuffle(kinds)

    asked: set[int] = set()
    paraphrased: set[int] = set()
    owed = 0  # paraphrase slots that came before any question they could paraphrase
    out: list[Query] = []

    def draw_popular() -> Query:
        i = rng.choices(range(pool), weights=weights)[0]
        kind = "repeat" if i in asked else "first"
        asked.add(i)
        return Query(text=popular[i][0], group=f"p{i}", kind=kind)

    def draw_paraphrase() -> Query | None:
        candidates = sorted(asked - paraphrased)
        if not candidates:
            return None
        i = rng.choices(candidates, weights=[weights[c] for c in candidates])[0]
        paraphrased.add(i)
        return Query(text=popular[i][1], group=f"p{i}", kind="paraphrase")

    for n, kind in enumerate(kinds):
        if kind == "unique":
            out.append(Query(text=uniques[n], group=f"u{n}", kind="unique"))
        elif kind == "paraphrase" or owed:
            query = draw_paraphrase()
            if query is None:
                owed += kind == "paraphrase"
                query = draw_popular()
            elif kind != "paraphrase":
                owed -= 1
            out.append(query)
        else:
            out.append(draw_popular())
    return out


# ---------------------------------------------------------------------------------------------
# Prices and tokens


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per 1M tokens from config/prices.toml (0 for a model it does not list)."""

    model: str
    input: float
    output: float
    embedding_model: str
    embedding: float
    taken: str
    missing: tuple[str, ...] = ()

    @classmethod
    def load(cls, model: str, embedding_model: str) -> Prices:
        table = tomllib.loads(PRICES_FILE.read_text())
        models = table.get("models", {})
        llm, emb = models.get(model, {}), models.get(embedding_model, {})
        missing = tuple(
            name
            for name, row, field_ in ((model, llm, "input"), (embedding_model, emb, "embedding"))
            if field_ not in row
        )
        return cls(
            model=model,
            input=float(llm.get("input", 0.0)),
            output=float(llm.get("output", 0.0)),
            embedding_model=embedding_model,
            embedding=float(emb.get("embedding", 0.0)),
            taken=str(table.get("taken", "unknown")),
            missing=missing,
        )

    def llm_cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1e6

    def embedding_cost(self, tokens: float) -> float:
        return tokens * self.embedding / 1e6


class TokenCounter:
    """tiktoken counts in the encoding of the model the tokens are priced at (offline)."""

    def __init__(self, *, llm_model: str, embedding_model: str, cache_dir: Path) -> None:
        self.llm = get_encoding(self._name(llm_model), cache_dir)
        self.embedding = get_encoding(self._name(embedding_model), cache_dir)

    @staticmethod
    def _name(model: str) -> str:
        try:
            name = str(tiktoken.encoding_name_for_model(model))
        except KeyError:
            return "cl100k_base"
        return name if name in SHIPPED_ENCODINGS else "cl100k_base"

    def prompt(self, messages: list[dict[str, str]]) -> int:
        # OpenAI chat format: about 3 tokens of framing per message, 3 to prime the reply.
        return 3 + sum(
            4 + len(self.llm.encode(m["content"], disallowed_special=())) for m in messages
        )

    def text(self, text: str) -> int:
        return len(self.llm.encode(text, disallowed_special=()))

    def query(self, text: str) -> int:
        return len(self.embedding.encode(text, disallowed_special=()))


# ---------------------------------------------------------------------------------------------
# Replay


@dataclass(slots=True)
class Record:
    """One request as the client saw it."""

    index: int
    query: str
    group: str | None
    kind: str
    status_code: int
    latency_ms: float
    path: str = "error"  # miss | exact | semantic | error
    cache: dict[str, str] = field(default_factory=dict)
    generated: bool = False  # this request ran the LLM (usage > 0)
    usage_prompt: int = 0  # as the service reported (the served model's tokenizer)
    usage_completion: int = 0
    prompt_tokens: int = 0  # tiktoken, the prompt this answer was generated from
    completion_tokens: int = 0  # tiktoken, the answer
    query_tokens: int = 0  # tiktoken, for the embedding price
    lookup_ms: float = 0.0  # time on cache lookups (exact and semantic), server-side
    matched_query: str | None = None
    similarity: float | None = None
    error: str | None = None

    @property
    def embedded(self) -> bool:
        return self.cache.get("embedding") in ("miss", "bypass")


def _record(
    index: int, query: Query, response: httpx.Response, ms: float, tokens: TokenCounter
) -> Record:
    record = Record(
        index=index,
        query=query.text,
        group=query.group,
        kind=query.kind,
        status_code=response.status_code,
        latency_ms=ms,
        query_tokens=tokens.query(query.text),
    )
    if response.status_code != 200:
        record.error = response.text[:200]
        return record
    body = response.json()
    record.cache = body["cache"]
    llm = record.cache["llm"]
    record.path = "exact" if llm == "hit" else "semantic" if llm == "semantic" else "miss"
    record.usage_prompt = int(body["usage"]["prompt_tokens"])
    record.usage_completion = int(body["usage"]["completion_tokens"])
    record.generated = record.usage_prompt + record.usage_completion > 0
    sources = [
        ScoredChunk(
            chunk=Chunk(
                doc_id=s["doc_id"],
                chunk_id=s["chunk_id"],
                text=s["text"],
                source="",
                content_hash="",
            ),
            score=s["score"],
        )
        for s in body["sources"]
    ]
    record.prompt_tokens = tokens.prompt(build_messages(query.text, sources))
    record.completion_tokens = tokens.text(body["answer"])
    timings = body.get("timings_ms", {})
    record.lookup_ms = float(timings.get("cache_lookup", 0.0)) + float(
        timings.get("semantic_lookup", 0.0)
    )
    if body.get("semantic"):
        record.matched_query = body["semantic"]["matched_query"]
        record.similarity = body["semantic"]["similarity"]
    return record


async def replay(
    client: httpx.AsyncClient,
    queries: Sequence[Query],
    cache: dict[str, Any],
    *,
    concurrency: int,
    tokens: TokenCounter,
    label: str,
) -> list[Record]:
    """Send every query in order, at most ``concurrency`` at a time (the semaphore is FIFO)."""
    gate = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(queries), desc=f"{label:>16}", unit="q", dynamic_ncols=True)

    async def one(index: int, query: Query) -> Record:
        async with gate:
            started = time.perf_counter()
            try:
                response = await client.post("/ask", json={"query": query.text, "cache": cache})
            except httpx.HTTPError as exc:
                ms = (time.perf_counter() - started) * 1000
                bar.update()
                return Record(index, query.text, query.group, query.kind, 0, ms, error=repr(exc))
            ms = (time.perf_counter() - started) * 1000
        record = _record(index, query, response, ms, tokens)
        bar.update()
        return record

    try:
        return list(await asyncio.gather(*(one(i, q) for i, q in enumerate(queries))))
    finally:
        bar.close()


# ---------------------------------------------------------------------------------------------
# Redis memory


class RedisProbe:
    """The server's ``used_memory`` and the cache entries of one namespace with their size
    (``MEMORY USAGE``: key, value and per-key overhead) by layer."""

    def __init__(self, url: str, namespace: str) -> None:
        self._client = aioredis.Redis.from_url(url)
        self._prefix = f"rag:{namespace}:"

    async def used_memory(self) -> int:
        info = await self._client.info("memory")
        return int(info["used_memory"])

    async def entries(self) -> dict[str, dict[str, int]]:
        """``{layer: {"keys", "bytes"}}`` over the cache layers (not the corpus version, nor the
        single-flight locks and relay streams, which live for seconds)."""
        keys: list[bytes] = [
            k async for k in self._client.scan_iter(match=f"{self._prefix}*", count=1000)
        ]
        layers = [k.decode()[len(self._prefix) :].split(":", 1)[0] for k in keys]
        chosen = [
            (k, layer) for k, layer in zip(keys, layers, strict=True) if layer in CACHE_LAYERS
        ]
        pipe = self._client.pipeline(transaction=False)
        for key, _ in chosen:
            pipe.memory_usage(key, samples=0)
        sizes = await pipe.execute() if chosen else []
        out: dict[str, dict[str, int]] = {}
        for (_, layer), size in zip(chosen, sizes, strict=True):
            if size is None:  # expired between SCAN and MEMORY USAGE
                continue
            row = out.setdefault(CACHE_LAYERS[layer], {"keys": 0, "bytes": 0})
            row["keys"] += 1
            row["bytes"] += int(size)
        return out

    async def aclose(self) -> None:
        await self._client.aclose()


def memory_figures(
    before_used: int, after_used: int, before: dict[str, dict[str, int]], after: dict[str, Any]
) -> dict[str, Any]:
    keys = sum(row["keys"] for row in after.values()) - sum(row["keys"] for row in before.values())
    size = sum(row["bytes"] for row in after.values()) - sum(
        row["bytes"] for row in before.values()
    )
    answers = after.get("llm", {}).get("keys", 0)
    return {
        "measured": True,
        "used_memory_delta": after_used - before_used,
        "entries_by_layer": {
            layer: {**row, "bytes_per_entry": round(row["bytes"] / row["keys"])}
            for layer, row in sorted(after.items())
            if row["keys"]
        },
        "entries": keys,
        "entry_bytes": size,
        "bytes_per_entry": round(size / keys) if keys > 0 else None,
        "answers_cached": answers,
        # everything one distinct question leaves behind: its embedding, search result, answer,
        # semantic entry, and its share of the document tags
        "bytes_per_cached_answer": round(size / answers) if answers else None,
        "used_memory_per_entry": round((after_used - before_used) / keys) if keys > 0 else None,
    }


# ---------------------------------------------------------------------------------------------
# Summaries


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


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
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


def summarize(
    records: Sequence[Record],
    *,
    stats: dict[str, Any],
    memory: dict[str, Any],
    groups: dict[str, set[str]],
    prices: Prices,
    seconds: float,
) -> dict[str, Any]:
    n = len(records)
    ok = [r for r in records if r.path != "error"]
    paths = Counter(r.path for r in records)

    def share(count: int) -> float:
        return round(count / n, 4) if n else 0.0

    def layer_hits(layer: str) -> int:
        return sum(r.cache.get(layer) == "hit" for r in ok)

    generated = [r for r in ok if r.generated]
    prompt = sum(r.prompt_tokens for r in generated)
    completion = sum(r.completion_tokens for r in generated)
    embedding_calls = int(stats["upstream_calls"]["embedding"])
    embedded = [r for r in ok if r.embedded]
    mean_query_tokens = float(np.mean([r.query_tokens for r in records])) if records else 0.0
    # A vector is needed for the search on every search miss; more calls than that are made for
    # the semantic layer alone (a lookup or an entry whose query vector was not at hand).
    needed = sum(r.cache.get("search") != "hit" for r in ok)
    extra_calls = max(0, embedding_calls - needed)
    embedding_tokens = (
        sum(r.query_tokens for r in embedded)
        + max(0, embedding_calls - len(embedded)) * mean_query_tokens
    )

    semantic_hits = [r for r in ok if r.path == "semantic"]
    wrong, checked = [], 0
    for r in semantic_hits:
        own = r.group
        theirs = groups.get(r.matched_query or "", set())
        if own is None or not theirs:
            continue
        checked += 1
        if own not in theirs:
            wrong.append(
                {"query": r.query, "matched_query": r.matched_query, "similarity": r.similarity}
            )

    lookup = [r.lookup_ms for r in ok]
    return {
        "requests": n,
        "errors": paths["error"],
        "seconds": round(seconds, 1),
        "paths": {p: paths[p] for p in PATHS},
        "hit_rates": {
            "embedding": share(layer_hits("embedding")),
            "search": share(layer_hits("search")),
            "llm_exact": share(paths["exact"]),
            "llm_semantic": share(paths["semantic"]),
            "llm_total": share(paths["exact"] + paths["semantic"]),
        },
        "hit_rate_by_kind": {
            kind: share_of(
                [r for r in ok if r.kind == kind], lambda r: r.path in ("exact", "semantic")
            )
            for kind in sorted({r.kind for r in records})
        },
        "upstream_calls": stats["upstream_calls"],
        "llm_calls": int(stats["upstream_calls"]["llm"]),
        "generated_requests": len(generated),
        "latency_ms": {
            "all": percentiles([r.latency_ms for r in ok]),
            **{p: percentiles([r.latency_ms for r in ok if r.path == p]) for p in PATHS},
        },
        "tokens_spent": {"prompt": prompt, "completion": completion},
        "usage_spent": {
            "prompt": sum(r.usage_prompt for r in ok),
            "completion": sum(r.usage_completion for r in ok),
        },
        "embedding": {
            "calls": embedding_calls,
            "needed_for_search": needed,
            "extra_calls": extra_calls,
            "extra_cost_usd": prices.embedding_cost(extra_calls * mean_query_tokens),
            "tokens": round(embedding_tokens, 1),
            "cost_usd": prices.embedding_cost(embedding_tokens),
        },
        "cost_usd": {
            "llm": prices.llm_cost(prompt, completion),
            "embedding": prices.embedding_cost(embedding_tokens),
            "total": prices.llm_cost(prompt, completion) + prices.embedding_cost(embedding_tokens),
        },
        "cache_lookup_ms": {
            "total": round(sum(lookup), 2),
            "mean": round(float(np.mean(lookup)), 3) if lookup else 0.0,
            "mean_on_misses": round(
                float(np.mean([r.lookup_ms for r in ok if r.path == "miss"])), 3
            )
            if paths["miss"]
            else 0.0,
        },
        "semantic": {
            "hits": len(semantic_hits),
            "checked": checked,
            "wrong": len(wrong),
            "wrong_rate": round(len(wrong) / checked, 4) if checked else 0.0,
            "wrong_hits": wrong,
        },
        "service_stats_delta": stats,
        "memory": memory,
    }


def share_of(records: Sequence[Record], predicate: Any) -> dict[str, float | int]:
    hits = sum(1 for r in records if predicate(r))
    return {"n": len(records), "hit_rate": round(hits / len(records), 4) if records else 0.0}


def savings(base: dict[str, Any], config: dict[str, Any], prices: Prices) -> dict[str, Any]:
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


# ---------------------------------------------------------------------------------------------
# Running


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send requests, and (optionally) the Redis behind it for the memory figures."""

    url: str
    redis_url: str | None
    namespace: str
    llm_model: str
    max_tokens: int | None  # known in-process only


@contextlib.contextmanager
def in_process_service(
    *,
    max_tokens: int | None,
    llm_threads: int | None = None,
    admin_key: str = "",
    embedder: Any = None,
    redis_url: str | None = None,
    llm_base_url: str = "",
) -> Iterator[Target]:
    """The app on the real local parts, served by uvicorn in a thread, in a fresh namespace on a
    private embedded Valkey (or ``redis_url``); the LLM is started by the app as in ``rag serve``
    unless ``llm_base_url`` is given. ``embedder`` lets a test share its loaded model."""
    from rag.local import embedded_valkey
    from services.app import create_app
    from services.serving import serve_in_thread

    with contextlib.ExitStack() as stack:
        redis_url = redis_url or stack.enter_context(embedded_valkey())
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rag-bench-")))
        overrides: dict[str, Any] = {}
        if max_tokens is not None:
            overrides["llm_max_tokens"] = max_tokens
        if llm_threads is not None:
            overrides["llm_threads"] = llm_threads
        settings = Settings(
            namespace=f"bench-{uuid.uuid4().hex[:8]}",
            data_dir=data_dir,
            redis_url=redis_url,
            llm_base_url=llm_base_url,
            seed_sample_corpus=True,
            admin_api_key=admin_key,
            **overrides,
        )
        app = create_app(settings, embedder=embedder)
        with serve_in_thread(app, start_timeout_s=300) as url:
            yield Target(
                url=url,
                redis_url=redis_url,
                namespace=settings.namespace,
                llm_model=settings.llm_model,
                max_tokens=settings.llm_max_tokens,
            )


async def run_configs(
    target: Target,
    queries: Sequence[Query],
    *,
    concurrency: int,
    admin_key: str,
    api_key: str = "",
    prices: Prices,
    tokens: TokenCounter,
    timeout_s: float,
) -> tuple[dict[str, Any], dict[str, list[Record]]]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    admin = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    probe = RedisProbe(target.redis_url, target.namespace) if target.redis_url else None
    groups: dict[str, set[str]] = {}
    for q in queries:
        if q.group is not None:
            groups.setdefault(q.text, set()).add(q.group)
    summaries: dict[str, Any] = {}
    records: dict[str, list[Record]] = {}
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(
        base_url=target.url, timeout=timeout_s, headers=headers, limits=limits
    ) as client:
        # One request the caches never keep, so no configuration pays the models' first-call cost.
        warm = await client.post(
            "/ask", json={"query": "What is cached?", "cache": {"mode": "no-store"}}
        )
        if warm.status_code == 401:
            raise SystemExit("POST /ask needs an API key (--api-key)")
        warm.raise_for_status()
        for name, cache in CONFIGS.items():
            cleared = await client.post("/cache/invalidate", json={"all": True}, headers=admin)
            if cleared.status_code == 401:
                raise SystemExit("POST /cache/invalidate needs the admin key (--admin-key)")
            cleared.raise_for_status()
            before_used = await probe.used_memory() if probe else 0
            before_entries = await probe.entries() if probe else {}
            before = (await client.get("/stats")).json()
            load_before = os.getloadavg()[0]
            started = time.perf_counter()
            records[name] = await replay(
                client, queries, cache, concurrency=concurrency, tokens=tokens, label=LABELS[name]
            )
            seconds = time.perf_counter() - started
            load = (round(load_before, 2), round(os.getloadavg()[0], 2))
            stats = _delta(before, (await client.get("/stats")).json())
            memory: dict[str, Any] = {"measured": False}
            if probe is not None:
                after_used, after_entries = await probe.used_memory(), await probe.entries()
                memory = memory_figures(before_used, after_used, before_entries, after_entries)
            summaries[name] = summarize(
                records[name],
                stats=stats,
                memory=memory,
                groups=groups,
                prices=prices,
                seconds=seconds,
            )
            summaries[name]["load_average"] = {"before": load[0], "after": load[1]}
    if probe is not None:
        await probe.aclose()
    return summaries, records


def build_results(
    summaries: dict[str, Any], queries: Sequence[Query], settings: dict[str, Any], prices: Prices
) -> dict[str, Any]:
    base = summaries["no_cache"]
    return {
        "settings": settings,
        "prices": asdict(prices),
        "workload": {
            "requests": len(queries),
            "distinct_queries": len({q.text for q in queries}),
            "groups": len({q.group for q in queries if q.group is not None}),
            "kinds": dict(Counter(q.kind for q in queries)),
        },
        "configs": summaries,
        "savings": {
            name: savings(base, summary, prices)
            for name, summary in summaries.items()
            if name != "no_cache"
        },
    }


# ---------------------------------------------------------------------------------------------
# Outputs


def _cost_per_request(records: Sequence[Record], prices: Prices) -> list[float]:
    return [
        (prices.llm_cost(r.prompt_tokens, r.completion_tokens) if r.generated else 0.0)
        + (prices.embedding_cost(r.query_tokens) if r.embedded else 0.0)
        for r in records
    ]


STYLES = {"no_cache": ":", "exact": "--", "exact_semantic": "-"}  # line style per config
COLORS = {"miss": "tab:red", "exact": "tab:green", "semantic": "tab:purple"}  # colour per path


def write_charts(records: dict[str, list[Record]], prices: Prices, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig: Any, ax: Any, name: str, title: str) -> str:
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        return name

    files = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in ("exact", "exact_semantic"):
        served = np.cumsum([r.path in ("exact", "semantic") for r in records[name]])
        x = np.arange(1, len(served) + 1)
        ax.plot(x, served / x, STYLES[name], label=f"{LABELS[name]}: all hits")
    semantic = np.cumsum([r.path == "semantic" for r in records["exact_semantic"]])
    x = np.arange(1, len(semantic) + 1)
    ax.plot(x, semantic / x, color=COLORS["semantic"], label="exact + semantic: semantic hits")
    ax.set(xlabel="request", ylabel="LLM-layer hit rate so far", ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    files.append(save(fig, ax, "hit_rate.png", "Hit rate over the run (each config starts cold)"))

    fig, ax = plt.subplots(figsize=(7, 4))
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
    files.append(save(fig, ax, "latency_cdf.png", "Latency CDF per path"))

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, recs in records.items():
        cumulative = np.cumsum(_cost_per_request(recs, prices))
        ax.plot(np.arange(1, len(cumulative) + 1), cumulative, STYLES[name], label=LABELS[name])
    ax.set(xlabel="request", ylabel="cumulative cost, USD")
    ax.legend(loc="upper left", fontsize=8)
    title = f"Cumulative cost at {prices.model} + {prices.embedding_model} prices"
    files.append(save(fig, ax, "cost.png", title))
    return files


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def _usd(value: float) -> str:
    return f"${value:.6f}" if abs(value) < 0.01 else f"${value:.4f}"


def _cells(
    summary: dict[str, Any], saved: dict[str, Any] | None, *, semantic: bool
) -> dict[str, str]:
    """One configuration's column of the report, by row label."""
    c, lat = summary, summary["latency_ms"]
    cells = {
        "LLM layer: exact hits": _pct(c["hit_rates"]["llm_exact"]),
        "LLM layer: semantic hits": _pct(c["hit_rates"]["llm_semantic"]),
        "embedding layer hits": _pct(c["hit_rates"]["embedding"]),
        "search layer hits": _pct(c["hit_rates"]["search"]),
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
    for path, label in (("miss", "misses"), ("exact", "exact hits"), ("semantic", "semantic hits")):
        cells[f"{label} p50"] = _ms(lat[path]["p50"]) + f" (n={lat[path]['n']})"
        cells[f"{label} p95"] = _ms(lat[path]["p95"])
        cells[f"{label} p99"] = _ms(lat[path]["p99"])
    spent = c["tokens_spent"]
    cells |= {
        "cache lookups per request, mean": _ms(c["cache_lookup_ms"]["mean"]),
        "time on cache lookups, total": f"{c['cache_lookup_ms']['total'] / 1000:.2f} s",
        "prompt / completion tokens spent": f"{spent['prompt']:,} / {spent['completion']:,}",
        "cost (LLM + embeddings)": _usd(c["cost_usd"]["total"]),
        "extra embedding calls for the cache": (
            f"{c['embedding']['extra_calls']} ({_usd(c['embedding']['extra_cost_usd'])})"
        ),
        "service /stats: tokens saved, USD saved": (
            f"{c['service_stats_delta']['tokens_saved']:,.0f}, "
            f"{_usd(c['service_stats_delta']['cost_saved_usd'])}"
        ),
    }
    if saved:
        tokens, usd = saved["tokens_saved"], saved["usd_saved"]
        cells |= {
            "tokens saved (prompt / completion)": (
                f"{tokens['prompt']:,} / {tokens['completion']:,}"
            ),
            "LLM dollars saved (gross)": _usd(usd["llm_gross"]),
            "embedding dollars saved (negative: added)": _usd(usd["embedding"]),
            "**net dollars saved**": f"**{_usd(usd['net'])}** ({_pct(usd['net_share'])})",
            "net saved per 1M requests like these": f"${usd['net_per_million_requests']:,.0f}",
        }
    if semantic:
        cells["wrong semantic hits (matched another group)"] = (
            f"**{c['semantic']['wrong']}** of {c['semantic']['checked']}"
        )
    memory = c["memory"]
    if memory["measured"]:
        cells |= {
            "cache entries": f"{memory['entries']:,}",
            "**bytes per entry**": f"**{memory['bytes_per_entry'] or 0:,}**",
            "bytes per cached answer (all its entries)": (
                f"{memory['bytes_per_cached_answer'] or 0:,}"
            ),
            "used_memory added": f"{memory['used_memory_delta'] / 1024:,.0f} KiB",
        }
    return cells


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


def write_report(results: dict[str, Any], charts: Sequence[str], out: Path) -> None:
    s, w, prices = results["settings"], results["workload"], results["prices"]
    names = list(results["configs"])
    columns = {
        n: _cells(results["configs"][n], results["savings"].get(n), semantic=CONFIGS[n]["semantic"])
        for n in names
    }
    lines = [
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
        f"Prices (`config/prices.toml`, taken {prices['taken']}): `{prices['model']}` "
        f"${prices['input']} / 1M input and ${prices['output']} / 1M output tokens; embeddings "
        f"`{prices['embedding_model']}` ${prices['embedding']} / 1M tokens. Tokens are counted "
        "with tiktoken on each prompt and answer, in the price model's encoding.",
        "",
        "Each configuration replays the same workload from a cold cache (the namespace is "
        "cleared before it): **no cache** sends `cache.mode = no-cache`, **exact only** "
        "`cache.semantic = false`, **exact + semantic** `cache.semantic = true`.",
    ]
    header = ["| | " + " | ".join(LABELS[n] for n in names) + " |", "|---" * (len(names) + 1) + "|"]
    for title, rows in SECTIONS.items():
        present = [r for r in rows if any(r in columns[n] for n in names)]
        lines += ["", f"## {title}", "", *header]
        lines += [
            f"| {r} | " + " | ".join(columns[n].get(r, "-") for n in names) + " |" for r in present
        ]
    if not results["configs"]["exact_semantic"]["memory"]["measured"]:
        lines += ["", "Redis memory was not measured (give `--redis-url`)."]
    wrong = results["configs"]["exact_semantic"]["semantic"]["wrong_hits"]
    if wrong:
        lines += ["", "Wrong semantic hits:", ""]
        lines += [
            f"- {x['query']!r} got the answer of {x['matched_query']!r} ({x['similarity']})"
            for x in wrong
        ]
    lines += [
        "",
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
        "",
    ]
    lines += [f"![{c}]({c})" for c in charts]
    (out / "report.md").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = Settings()
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
        help="LLM tokens are priced as this model (config/prices.toml)",
    )
    run.add_argument(
        "--embedding-price-model",
        default="text-embedding-3-small",
        help="embedding calls are priced as this model (config/prices.toml)",
    )
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
    if args.workload:
        queries, source = load_workload(args.workload), str(args.workload)
    else:
        pairs = args.pairs or [DEFAULT_PAIRS]
        queries = generate_workload(
            size=args.size,
            seed=args.seed,
            shares=(args.repeats, args.paraphrases, args.uniques),
            pairs=pairs,
            zipf_s=args.zipf_s,
            distinct=args.distinct,
        )
        source = "generated from " + ", ".join(p.name for p in pairs)
    prices = Prices.load(args.price_model, args.embedding_price_model)
    for name in prices.missing:
        log.warning("no price for %r in %s: it counts $0", name, PRICES_FILE)
    defaults = Settings()
    tokens = TokenCounter(
        llm_model=args.price_model,
        embedding_model=args.embedding_price_model,
        cache_dir=(
            ROOT / defaults.data_dir if not defaults.data_dir.is_absolute() else defaults.data_dir
        )
        / "tiktoken",
    )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    (out / "workload.jsonl").write_text(
        "".join(
            json.dumps({"query": q.text, "group": q.group, "kind": q.kind}) + "\n" for q in queries
        )
    )

    with contextlib.ExitStack() as stack:
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
            where = "in-process (uvicorn in a thread, embedded Valkey, local SmolLM2, MiniLM)"
        else:
            if args.max_tokens is not None:
                log.warning("--max-tokens applies in-process only; the service keeps its own")
            target = Target(
                url=args.url.rstrip("/"),
                redis_url=args.redis_url,
                namespace=args.namespace,
                llm_model="(the service's)",
                max_tokens=None,
            )
            where = f"service at {target.url}"
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
    settings = {
        "command": " ".join(
            ["python scripts/benchmark.py", *(argv if argv is not None else sys.argv[1:])]
        ),
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
    results = build_results(summaries, queries, settings, prices)
    results["records"] = {name: [asdict(r) for r in recs] for name, recs in records.items()}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    charts = write_charts(records, prices, out)
    write_report(results, charts, out)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    results = benchmark(args, argv=argv)
    for name, s in results["savings"].items():
        c = results["configs"][name]
        print(
            f"{LABELS[name]:>16}: LLM hit rate {_pct(c['hit_rates']['llm_total'])} "
            f"(semantic {_pct(c['hit_rates']['llm_semantic'])}), "
            f"{s['llm_calls_avoided']} LLM calls avoided, net {_usd(s['usd_saved']['net'])} "
            f"saved ({_pct(s['usd_saved']['net_share'])}), "
            f"wrong semantic hits {c['semantic']['wrong']}"
        )
    print(f"wrote {args.out / 'report.md'} and {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
