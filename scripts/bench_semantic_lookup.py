"""Semantic-cache lookup overhead, excluding the query embedding, at 10k and 100k entries.

In one run and one process, for each size: the full ``SemanticCache.lookup`` (index search,
the decision rule on candidates, and on a hit the Redis fetch of the entry and its answer)
against a brute-force numpy floor (one matrix-vector product and an argmax over a plain
contiguous matrix of the same vectors). Queries alternate between paraphrases of stored
questions (hit path) and unrelated questions (miss path).

Entries are real MiniLM vectors of qqp-train questions, topped up with jittered copies of them
to reach the size (same anisotropic distribution; embedding 100k questions would take minutes).

Side by side in the same run: the current rule (cosine 0.94 + guards + MLP) and the
cross-encoder rule (low cosine gate, the top candidates read by the cross-encoder in one batch),
and, for each, the verifier alone scoring one query against its 5 nearest stored questions.
With ``--ce-float32`` the cross-encoder also runs in float32 (its path on a CPU without native
bfloat16), as a third rule. Torch runs on one thread (``torch.set_num_threads(1)``), as on a
shared core.

Usage: python scripts/bench_semantic_lookup.py [--sizes 10000 100000] [--queries 400]
       [--cross-encoder rag/config/semantic_cross_encoder.npz --ce-threshold G --ce-min-score S]
       [--ce-float32]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis
import torch

from rag.cache.gateway import RedisGateway
from rag.cache.layers import AnswerLayer
from rag.cache.layers.base import Freshness
from rag.embedding import SentenceTransformerEmbedder, default_model_path
from rag.local import embedded_valkey
from rag.semantic.cache import SemanticCache
from rag.semantic.cross_encoder import CrossEncoderVerifier
from rag.semantic.index import IndexEntry, SemanticIndex
from rag.semantic.rule import SemanticRule
from rag.semantic.verifier import Pair
from rag.settings import DEFAULT_CROSS_ENCODER, DEFAULT_VERIFIER
from rag.types import Completion, Usage

ROOT = Path(__file__).resolve().parent.parent

PAIRS = ROOT.parent / "shared" / "data" / "pairs" / "qqp-train.jsonl"


def p50(values: list[float]) -> float:
    return statistics.median(values) * 1000


def questions(n_queries: int) -> tuple[int, list[str], list[str]]:
    """The paraphrased pairs' count, the stored questions (the first sides of the paraphrased
    pairs first), and the queries (their other sides, then unrelated questions)."""
    rows = [json.loads(line) for line in PAIRS.read_text().splitlines()]
    positives = [r for r in rows if r["label"] == 1][: n_queries // 2]
    stored_texts = [r["a"] for r in positives] + [r["a"] for r in rows[:3000]]
    unrelated = [r["b"] for r in rows[-(n_queries // 2) :]]
    return len(positives), stored_texts, [r["b"] for r in positives] + unrelated


def entry_matrix(
    stored: np.ndarray[Any, Any], size: int, rng: np.random.Generator
) -> np.ndarray[Any, Any]:
    """``size`` unit vectors: the stored ones, then jittered copies of them."""
    extra = stored[rng.integers(0, len(stored), size - len(stored))]
    extra = extra + rng.normal(0, 0.08, extra.shape).astype(np.float32)
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    return np.vstack([stored, extra]).astype(np.float32)


async def fill(
    client: aioredis.Redis,
    index: SemanticIndex,
    *,
    ns: str,
    scope: str,
    texts: list[str],
    matrix: np.ndarray[Any, Any],
    answer_key: str,
    paraphrased: int,
) -> None:
    expires = time.time() + 600
    for i, (text, vector) in enumerate(zip(texts, matrix, strict=True)):
        entry = IndexEntry(
            key=f"rag:{ns}:sem:{scope}:{i}",
            scope=scope,
            query=text,
            answer_key=answer_key,
            expires_at=expires,
        )
        index.add(entry, vector)
    # the hit path fetches the entry itself from Redis: store the paraphrased ones
    for i in range(paraphrased):
        await client.set(
            f"rag:{ns}:sem:{scope}:{i}",
            json.dumps({"schema": 1, "kind": "sem", "sources": []}),
            ex=600,
        )


async def measure(
    cache: SemanticCache,
    scope: str,
    matrix: np.ndarray[Any, Any],
    query_texts: list[str],
    query_vectors: list[Any],
) -> tuple[list[float], list[float], int]:
    """Each query's lookup time and brute-force floor (seconds), and the number of hits."""
    lookups, floors, hits = [], [], 0
    for text, vector in zip(query_texts, query_vectors, strict=True):
        started = time.perf_counter()
        match = await cache.lookup(scope=scope, query=text, vector=vector)
        lookups.append(time.perf_counter() - started)
        hits += match is not None
        started = time.perf_counter()
        scores = matrix @ vector
        int(np.argmax(scores))
        floors.append(time.perf_counter() - started)
    return lookups, floors, hits


def semantic_cache(
    store: RedisGateway, rule: SemanticRule, index: SemanticIndex, answers: AnswerLayer
) -> SemanticCache:
    return SemanticCache(
        redis=store, rule=rule, index=index, answers=answers, embedding_model_id="minilm"
    )


def verifier_alone(
    rule: SemanticRule,
    stored_texts: list[str],
    stored_vectors: np.ndarray[Any, Any],
    query_texts: list[str],
    query_vectors: list[Any],
) -> list[float]:
    """Seconds to score each query against its 5 nearest stored questions: one ``scores``
    call, everything the verifier does (the MLP's lexical facts, the cross-encoder's batch)."""
    times = []
    for text, vector in zip(query_texts, query_vectors, strict=True):
        top = np.argsort(stored_vectors @ vector)[-5:]
        pairs = [Pair(text, vector, stored_texts[i], stored_vectors[i]) for i in top]
        started = time.perf_counter()
        rule.verifier.scores(pairs)
        times.append(time.perf_counter() - started)
    return times


def load_rules(
    ce_path: Path, ce_threshold: float, ce_min_score: float, *, ce_float32: bool
) -> dict[str, SemanticRule]:
    """The rules compared: the shipped MLP verifier and the cross-encoder under test (and the
    cross-encoder in float32, when asked)."""
    rules = {
        "current (0.94+guards+MLP)": SemanticRule.load(
            threshold=0.94, min_score=0.3, kind="mlp", verifier_path=DEFAULT_VERIFIER
        ),
        "cross-encoder": SemanticRule.load(
            threshold=ce_threshold,
            min_score=ce_min_score,
            kind="cross-encoder",
            verifier_path=ce_path,
        ),
    }
    if ce_float32:
        rules["cross-encoder (float32)"] = SemanticRule(
            threshold=ce_threshold,
            min_score=ce_min_score,
            verifier=CrossEncoderVerifier.load(ce_path, precision="float32"),
        )
    return rules


def report_verifier_alone(
    rules: dict[str, SemanticRule],
    stored_texts: list[str],
    stored_vectors: np.ndarray[Any, Any],
    query_texts: list[str],
    query_vectors: list[Any],
) -> None:
    print("verifier alone, one query vs its 5 nearest stored questions (ms):")
    for name, rule in rules.items():
        times = sorted(
            verifier_alone(rule, stored_texts, stored_vectors, query_texts, query_vectors)
        )
        p99 = times[int(0.99 * len(times))] * 1000
        print(f"  {name:<28} p50 {p50(times):7.3f}  p99 {p99:7.3f}")


async def report_lookups(
    sizes: list[int],
    rules: dict[str, SemanticRule],
    paraphrased: int,
    stored_texts: list[str],
    stored_vectors: np.ndarray[Any, Any],
    query_texts: list[str],
    query_vectors: list[Any],
) -> None:
    """Full semantic-cache lookups against an embedded Valkey, for each index size and rule."""
    rng = np.random.default_rng(0)
    with embedded_valkey() as url:
        client = aioredis.Redis.from_url(url)
        store = RedisGateway(client=client, timeout_s=1.0)
        ns = f"bench-{uuid.uuid4().hex[:6]}"
        answers = AnswerLayer(
            namespace=ns,
            llm_model="m",
            prompt_version="p",
            sampling={},
            ttl_s=600,
            freshness=Freshness(600),
        )
        answer_key = answers.key("q", [])
        completion = Completion("answer", ("ans", "wer"), Usage(), "stop", "m")
        await client.set(answer_key, answers.encode(completion), ex=600)
        print(
            f"{'rule':<28} {'entries':>8} {'lookup p50':>11} {'p99':>8} {'floor p50':>10} "
            f"{'ratio':>6} {'hits':>5}  (ms; {len(query_texts)} queries, half paraphrases)"
        )
        for size, (name, rule) in itertools.product(sizes, rules.items()):
            index = SemanticIndex(dimension=384, max_entries=size)
            cache = semantic_cache(store, rule, index, answers)
            scope = cache.scope("v")
            matrix = entry_matrix(stored_vectors, size, rng)
            texts = stored_texts + [f"filler question {i}" for i in range(size - len(stored_texts))]
            await fill(
                client,
                index,
                ns=ns,
                scope=scope,
                texts=texts,
                matrix=matrix,
                answer_key=answer_key,
                paraphrased=paraphrased,
            )
            lookups, floors, hits = await measure(cache, scope, matrix, query_texts, query_vectors)
            ordered = sorted(lookups)
            p99 = ordered[int(0.99 * len(ordered))] * 1000
            print(
                f"{name:<28} {size:>8} {p50(lookups):>11.3f} {p99:>8.3f} "
                f"{p50(floors):>10.3f} {p50(lookups) / p50(floors):>6.2f} {hits:>5}"
            )
        await client.aclose()


async def run(
    sizes: list[int],
    n_queries: int,
    ce_path: Path,
    ce_threshold: float,
    ce_min_score: float,
    *,
    ce_float32: bool,
) -> None:
    torch.set_num_threads(1)
    paraphrased, stored_texts, query_texts = questions(n_queries)
    embedder = SentenceTransformerEmbedder(
        model_path=default_model_path(), model_id="all-MiniLM-L6-v2", batch_size=64
    )
    stored_vectors = np.stack(embedder.embed_sync(stored_texts))
    query_vectors = embedder.embed_sync(query_texts)
    rules = load_rules(ce_path, ce_threshold, ce_min_score, ce_float32=ce_float32)
    for name, rule in rules.items():
        if isinstance(rule.verifier, CrossEncoderVerifier):
            print(f"{name}: {rule.verifier.precision}")
    report_verifier_alone(rules, list(stored_texts), stored_vectors, query_texts, query_vectors)
    await report_lookups(
        sizes, rules, paraphrased, stored_texts, stored_vectors, query_texts, query_vectors
    )
    embedder.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--cross-encoder", type=Path, default=DEFAULT_CROSS_ENCODER)
    parser.add_argument("--ce-threshold", type=float, default=0.7)
    parser.add_argument("--ce-min-score", type=float, default=0.5)
    parser.add_argument("--ce-float32", action="store_true")
    args = parser.parse_args()
    asyncio.run(
        run(
            args.sizes,
            args.queries,
            args.cross_encoder,
            args.ce_threshold,
            args.ce_min_score,
            ce_float32=args.ce_float32,
        )
    )
