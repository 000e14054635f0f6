"""Semantic-cache lookup overhead, excluding the query embedding, at 10k and 100k entries.

In one run and one process, for each size: the full ``SemanticCache.lookup`` (index search,
the decision rule on candidates, and on a hit the Redis fetch of the entry and its answer)
against a brute-force numpy floor (one matrix-vector product and an argmax over a plain
contiguous matrix of the same vectors). Queries alternate between paraphrases of stored
questions (hit path) and unrelated questions (miss path).

Entries are real MiniLM vectors of qqp-train questions, topped up with jittered copies of them
to reach the size (same anisotropic distribution; embedding 100k questions would take minutes).

Usage: python scripts/bench_semantic_lookup.py [--sizes 10000 100000] [--queries 400]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.cache.layers import AnswerCache  # noqa: E402
from rag.cache.store import RedisStore  # noqa: E402
from rag.embedding import SentenceTransformerEmbedder, default_model_path  # noqa: E402
from rag.local import embedded_valkey  # noqa: E402
from rag.semantic.cache import SemanticCache  # noqa: E402
from rag.semantic.index import IndexEntry, SemanticIndex  # noqa: E402
from rag.semantic.rule import SemanticRule  # noqa: E402
from rag.settings import Settings  # noqa: E402
from rag.types import Completion, Usage  # noqa: E402

PAIRS = ROOT.parent / "shared" / "data" / "pairs" / "qqp-train.jsonl"


def p50(values: list[float]) -> float:
    return statistics.median(values) * 1000


async def run(sizes: list[int], n_queries: int) -> None:
    settings = Settings()
    rows = [json.loads(line) for line in PAIRS.read_text().splitlines()]
    positives = [r for r in rows if r["label"] == 1][: n_queries // 2]
    stored_texts = [r["a"] for r in positives] + [r["a"] for r in rows[:3000]]
    unrelated = [r["b"] for r in rows[-(n_queries // 2) :]]
    embedder = SentenceTransformerEmbedder(
        model_path=default_model_path(), model_id="all-MiniLM-L6-v2", batch_size=64
    )
    stored_vectors = np.stack(embedder.embed_sync(stored_texts))
    query_texts = [r["b"] for r in positives] + unrelated
    query_vectors = embedder.embed_sync(query_texts)
    rule = SemanticRule.load(
        threshold=settings.semantic_threshold,
        min_score=settings.semantic_min_score,
        verifier_path=settings.verifier_path,
    )
    rng = np.random.default_rng(0)

    with embedded_valkey() as url:
        client = aioredis.Redis.from_url(url)
        store = RedisStore(client=client, timeout_s=1.0)
        ns = f"bench-{uuid.uuid4().hex[:6]}"
        answers = AnswerCache(
            store=store, namespace=ns, llm_model="m", prompt_version="p", sampling={}, ttl_s=600
        )
        answer_key = answers.key("q", [])
        await answers.put(answer_key, Completion("answer", ("ans", "wer"), Usage(), "stop", "m"))
        print(
            f"{'entries':>8} {'lookup p50':>11} {'p99':>8} {'floor p50':>10} {'ratio':>6} "
            f"{'hits':>5}  (ms; {len(query_texts)} queries, half paraphrases of stored ones)"
        )
        for size in sizes:
            index = SemanticIndex(dimension=384, max_entries=size)
            cache = SemanticCache(
                redis=client,
                store=store,
                namespace=ns,
                rule=rule,
                index=index,
                answer_cache=answers,
                scope_parts={},
                dimension=384,
                ttl_s=600,
            )
            scope = cache.scope("v")
            extra = stored_vectors[rng.integers(0, len(stored_vectors), size - len(stored_vectors))]
            extra = extra + rng.normal(0, 0.08, extra.shape).astype(np.float32)
            extra /= np.linalg.norm(extra, axis=1, keepdims=True)
            matrix = np.vstack([stored_vectors, extra]).astype(np.float32)
            texts = stored_texts + [f"filler question {i}" for i in range(len(extra))]
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
            for i in range(len(positives)):
                await client.set(
                    f"rag:{ns}:sem:{scope}:{i}",
                    json.dumps({"schema": 1, "kind": "sem", "sources": []}),
                    ex=600,
                )

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
            ordered = sorted(lookups)
            print(
                f"{size:>8} {p50(lookups):>11.3f} {ordered[int(0.99 * len(ordered))] * 1000:>8.3f} "
                f"{p50(floors):>10.3f} {p50(lookups) / p50(floors):>6.2f} {hits:>5}"
            )
        await client.aclose()
    embedder.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=400)
    args = parser.parse_args()
    asyncio.run(run(args.sizes, args.queries))
