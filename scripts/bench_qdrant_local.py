"""How search time of the embedded Qdrant (local mode) grows with the corpus (issue 16).

Local mode is qdrant-client's pure-Python engine: every search scores every stored vector with
numpy (no HNSW index), so its time grows linearly with the corpus, while a Qdrant server's HNSW
search stays near a millisecond. This script measures the local-mode side.

For each size (default 1k, 3.5k, 10k, 30k, 100k points): random unit vectors of dimension 384
with chunk-like payloads (about 900 characters of text), searched through the service's own
``QdrantRetriever.search`` (``query_points`` with payloads, k = the ``top_k`` setting) with
random unit query vectors. All collections are built first, then the queries go round the sizes
in turns, so the noise of a shared machine falls on every size alike.

The collections live in memory: local mode on a folder searches the same in-memory arrays and
only adds SQLite writes (one commit per point, so building 100k points on disk would take the
better part of an hour here). ``--disk`` also builds the smallest size in a folder, reports its
upsert rate and checks that its search time matches the in-memory one.

Usage: python scripts/bench_qdrant_local.py [--sizes 1000 3485 10000 30000 100000]
       [--queries 200] [--disk] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import tempfile
import time

import numpy as np
from qdrant_client import AsyncQdrantClient

from rag.corpus_version import CorpusState
from rag.retrieval import QdrantRetriever
from rag.settings import Settings
from rag.types import Chunk

DIMENSION = 384
BATCH = 512
WORDS = "cache key value entry vector search query answer token chunk model index".split()


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.normal(size=(n, DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _chunks(start: int, n: int, words: random.Random) -> list[Chunk]:
    return [
        Chunk(
            doc_id=f"doc-{i // 23}",
            chunk_id=f"doc-{i // 23}#{i % 23}",
            text=" ".join(words.choice(WORDS) for _ in range(150)),
            source=f"docs/doc-{i // 23}.md",
            content_hash=f"{i:064x}",
        )
        for i in range(start, start + n)
    ]


async def _build(client: AsyncQdrantClient, size: int, seed: int) -> tuple[QdrantRetriever, float]:
    """A collection of ``size`` points; returns its retriever and the upsert rate (points/s)."""
    retriever = QdrantRetriever(client=client, collection=f"c{size}", dimension=DIMENSION)
    await retriever.ensure_collection()
    rng, words = np.random.default_rng(seed), random.Random(seed)
    spent = 0.0
    for start in range(0, size, BATCH):
        n = min(BATCH, size - start)
        chunks, vectors = _chunks(start, n, words), list(_unit(rng, n))
        started = time.perf_counter()
        await retriever.upsert(chunks, vectors, {c.doc_id: "bench" for c in chunks})
        spent += time.perf_counter() - started
    await retriever.write_state(CorpusState(version="bench", revealed={"bench": "*"}))  # visible
    return retriever, size / spent


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(sizes: list[int], queries: int, disk: bool) -> None:
    k = Settings().top_k
    memory = AsyncQdrantClient(location=":memory:")
    retrievers: dict[str, QdrantRetriever] = {}
    for size in sizes:
        retrievers[f"{size}"], _ = await _build(memory, size, seed=size)
    folder, path = None, ""
    if disk:
        path = tempfile.mkdtemp(prefix="bench-qdrant-")
        folder = AsyncQdrantClient(path=path)
        retrievers[f"{sizes[0]} on disk"], rate = await _build(folder, sizes[0], seed=sizes[0])
        print(f"local mode on a folder: {rate:.0f} points/s upserted (one SQLite commit a point)")
    times: dict[str, list[float]] = {name: [] for name in retrievers}
    for vector in _unit(np.random.default_rng(1), queries):
        for name, retriever in retrievers.items():
            started = time.perf_counter()
            found = await retriever.search(vector, k)
            times[name].append(time.perf_counter() - started)
            assert len(found) == k
    print(f"Qdrant local mode, dim {DIMENSION}, k={k}, {queries} random queries per size (ms):")
    print(f"{'points':>14} {'p50':>8} {'p99':>8} {'mean':>8} {'us/1k points':>13}")
    for name, values in times.items():
        points = int(name.split()[0])
        p50 = _ms(values, 0.5)
        print(
            f"{name:>14} {p50:>8.2f} {_ms(values, 0.99):>8.2f} "
            f"{1000 * statistics.fmean(values):>8.2f} {1000 * p50 / points * 1000:>13.1f}"
        )
    await memory.close()
    if folder is not None:
        await folder.close()
        shutil.rmtree(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1000, 3485, 10_000, 30_000, 100_000]
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--disk", action="store_true", help="also the smallest size in a folder")
    parser.add_argument("--quick", action="store_true", help="sizes 1000 and 3485, 50 queries")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.queries = [1000, 3485], 50
    asyncio.run(run(sorted(args.sizes), args.queries, args.disk))


if __name__ == "__main__":
    main()
