"""How the embedded vector store (Qdrant Edge, ``rag.edge``) scales: one store per size, built
the way the service builds it (``EdgeRetriever.upsert`` of chunk-like points, the corpus record
switched, the HNSW index built in its child process once writes are quiet), then measured.

Vectors, of MiniLM's dimension (384):
- ``minilm``: jittered copies of real all-MiniLM-L6-v2 vectors, each a base vector plus Gaussian
  noise (cosine ~0.8 to its base), so that the store holds tight clusters of near neighbours, as
  real documents make. The bases (``--bases``): the paragraphs of the README and ``docs/``
  (~160) and the ~19,350 distinct questions of ``../shared/data/pairs`` (``questions``, the
  default), or the paragraphs alone (``docs``: at 1M chunks, ~6,000 near-equidistant copies of
  each base, a corpus of a few topics repeated, the hardest case for recall);
- ``random``: uniform random unit vectors (no structure: the hardest case for an HNSW graph).
Queries are fresh jittered copies (``minilm``) or fresh random vectors (``random``), searched
through ``EdgeRetriever.search`` (the visibility filter included, k = the ``top_k`` setting).

Per size: upsert rate, index build time (copy, child build, swap), search p50/p99 over the
queries, recall@k against brute force (numpy over every stored vector), start-up time (a new
process opens the store and answers one search), disk per chunk, memory per chunk (the RSS
that process gains by opening the store), and what the search-result cache layer costs instead
of a search on a hit (p50 of a GET of its entry from the machine's Redis, decoded).

Usage: python scripts/bench_vector_store.py [--sizes 10000 100000 1000000]
       [--kinds minilm random] [--bases questions|docs] [--queries 200] [--keep DIR]
       [--hnsw-ef N] [--sweep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import qdrant_edge as qe
from redis.asyncio import Redis
from tqdm import tqdm

from rag.cache.layers.base import Models
from rag.cache.layers.search import SearchLayer
from rag.corpus_version import CorpusState
from rag.edge import EdgeRetriever
from rag.settings import Settings
from rag.types import Chunk, ScoredChunk

DIMENSION = 384
BATCH = 1000
JITTER = 0.75 / np.sqrt(DIMENSION)  # noise of norm ~0.75 on a unit vector: cosine ~0.8
WORDS = "cache key value entry vector search query answer token chunk model index".split()
ROOT = Path(__file__).resolve().parent.parent
PAIRS = ROOT.parent / "shared" / "data" / "pairs"


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def minilm_bases(bases: str) -> np.ndarray:
    """Real MiniLM vectors: the paragraphs of this project's documentation, and (``questions``)
    the questions of the labelled pairs."""
    from rag.embedding import SentenceTransformerEmbedder, default_model_path

    texts = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        texts += [p.strip() for p in path.read_text().split("\n\n") if len(p.strip()) > 40]
    if bases == "questions":
        files = sorted(PAIRS.glob("*.jsonl"))
        if not files:
            sys.exit(f"no question pairs in {PAIRS}: use --bases docs")
        pairs = [json.loads(line) for f in files for line in f.read_text().splitlines()]
        texts += sorted({q for pair in pairs for q in (pair["a"], pair["b"])})
    embedder = SentenceTransformerEmbedder(
        model_path=default_model_path(), model_id="all-MiniLM-L6-v2", batch_size=64
    )
    try:
        vectors = []
        for start in tqdm(range(0, len(texts), 1024), desc="embedding the bases", unit="batch"):
            vectors += embedder.embed_sync(texts[start : start + 1024])
        return unit(np.asarray(vectors, dtype=np.float32))
    finally:
        embedder.close()


class Vectors:
    def __init__(self, kind: str, bases: np.ndarray | None, seed: int) -> None:
        self.kind, self.bases = kind, bases
        self.rng = np.random.default_rng(seed)

    def make(self, n: int) -> np.ndarray:
        if self.bases is None:
            return unit(self.rng.standard_normal((n, DIMENSION)))
        picked = self.bases[self.rng.integers(0, len(self.bases), n)]
        return unit(picked + JITTER * self.rng.standard_normal((n, DIMENSION)))


def chunks(start: int, n: int, words: random.Random) -> list[Chunk]:
    return [
        Chunk(
            doc_id=f"doc-{i // 23}",
            chunk_id=f"doc-{i // 23}#{i % 23}",
            text=" ".join(words.choice(WORDS) for _ in range(150)),  # ~900 characters
            source=f"docs/doc-{i // 23}.md",
            content_hash=f"{i:064x}",
        )
        for i in range(start, start + n)
    ]


def disk_bytes(folder: Path) -> int:
    """Space taken on disk (files are preallocated and sparse: their size says more)."""
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


async def search_cache_hit_ms(found: list[ScoredChunk], rounds: int = 500) -> float:
    """p50 of what a search-result cache hit costs instead: a GET from the machine's Redis of
    the entry the search layer would keep for ``found``, decoded by the layer."""
    settings = Settings()
    models = Models(
        embedding_id="m",
        dimension=DIMENSION,
        llm="",
        sampling={},
        answer_prompt="",
        rewrite_prompt="",
    )
    layer = SearchLayer.from_settings(settings, "bench", models)
    client = Redis.from_url("redis://127.0.0.1:6379/0")
    key = f"bench-vector-store:{uuid.uuid4().hex}"
    await client.set(key, layer.encode(found), ex=60)
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        raw = await client.get(key)
        assert raw is not None and len(layer.decode(raw).value) == len(found)
        times.append(time.perf_counter() - began)
    await client.delete(key)
    await client.aclose()
    return 1000 * float(np.percentile(times, 50))


_OPEN = """
import asyncio, json, resource, sys, time
from pathlib import Path
import numpy as np
from rag.edge import EdgeRetriever
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
async def main():
    before = rss()
    started = time.perf_counter()
    store = EdgeRetriever(folder=Path(sys.argv[1]), dimension=384, hnsw_ef=int(sys.argv[2]),
                          index_after=10**12)
    await store.read_state()
    await store.search(np.ones(384, dtype=np.float32) / 384**0.5, 4)
    print(json.dumps({"start_s": time.perf_counter() - started, "rss": rss() - before}))
    await store.aclose()
asyncio.run(main())
"""


async def searches(
    store: EdgeRetriever, asked: np.ndarray, exact: np.ndarray, k: int
) -> tuple[list[float], int]:
    """Seconds per search, and how many of the true top k were found."""
    times, hits = [], 0
    for q, truth in zip(asked, exact, strict=True):
        began = time.perf_counter()
        found = await store.search(q, k)
        times.append(time.perf_counter() - began)
        ids = {int(f.chunk.content_hash, 16) for f in found}
        hits += len(ids & {int(i) for i in truth})
    return times, hits


async def sweep_params(
    store: EdgeRetriever, asked: np.ndarray, exact: np.ndarray, k: int, label: str
) -> None:
    """``--sweep``: the same queries again, warm, at other search breadths, with and without
    rescoring the int8 candidates on the full vectors (set on the store's search parameters)."""
    for ef in (64, 128, 256, 512):
        for rescore in (True, False):
            quantization = qe.QuantizationSearchParams(rescore=rescore, oversampling=2.0)
            store._params = qe.SearchParams(hnsw_ef=ef, quantization=quantization)
            times, hits = await searches(store, asked, exact, k)
            print(
                f"{label}, warm, ef {ef}, rescored {rescore}: p50 "
                f"{1000 * np.percentile(times, 50):.2f} ms, p99 "
                f"{1000 * np.percentile(times, 99):.2f} ms, recall@{k} "
                f"{hits / (k * len(asked)):.3f}",
                flush=True,
            )


async def measure(
    kind: str,
    size: int,
    bases: np.ndarray | None,
    queries: int,
    folder: Path,
    hnsw_ef: int,
    sweep: bool = False,
) -> dict[str, float]:
    k = Settings().top_k
    shutil.rmtree(folder, ignore_errors=True)
    store = EdgeRetriever(folder=folder, dimension=DIMENSION, hnsw_ef=hnsw_ef, index_after=10_000)
    await store.write_state(CorpusState(version="bench", revealed={"bench": "*"}))
    source, words = Vectors(kind, bases, seed=size), random.Random(size)
    stored = np.empty((size, DIMENSION), dtype=np.float32)
    written = 0.0
    for start in tqdm(range(0, size, BATCH), desc=f"{kind} {size:,}: upsert", unit="batch"):
        n = min(BATCH, size - start)
        batch = source.make(n)
        stored[start : start + n] = batch
        part = chunks(start, n, words)
        began = time.perf_counter()
        await store.upsert(part, list(batch), {c.doc_id: "bench" for c in part})
        written += time.perf_counter() - began
    began = time.perf_counter()
    await asyncio.sleep(0.1)  # the indexer starts after the quiet period of the last write
    await store.wait_indexed()
    build_s = time.perf_counter() - began
    unindexed = store.unindexed()
    if unindexed:  # a failed build leaves the store as it was: say so, measure nothing
        sys.exit(f"{kind} {size:,}: the index build failed, {unindexed:,} points unindexed")

    asked = source.make(queries)
    hit_ms = await search_cache_hit_ms(await store.search(asked[0], k))
    exact = np.argpartition(-(asked @ stored.T), k, axis=1)[:, :k]  # the true top k, unordered
    times, hits = await searches(store, asked, exact, k)
    if sweep:
        await sweep_params(store, asked, exact, k, f"{kind} {size:,}")
    await store.aclose()
    opened = subprocess.run(
        [sys.executable, "-c", _OPEN, str(folder), str(hnsw_ef)],
        check=True,
        capture_output=True,
        text=True,
    )
    started = json.loads(opened.stdout)
    return {
        "upsert_per_s": size / written,
        "build_s": build_s,
        "unindexed": unindexed,
        "p50_ms": 1000 * float(np.percentile(times, 50)),
        "p99_ms": 1000 * float(np.percentile(times, 99)),
        "cache_hit_ms": hit_ms,
        "recall": hits / (k * queries),
        "start_s": started["start_s"],
        "disk_per_chunk": disk_bytes(folder) / size,
        "rss_per_chunk": started["rss"] / size,
    }


async def run(
    sizes: list[int],
    kinds: list[str],
    base_set: str,
    queries: int,
    keep: Path | None,
    hnsw_ef: int,
    sweep: bool,
) -> None:
    bases = minilm_bases(base_set) if "minilm" in kinds else None
    work = keep or Path(tempfile.mkdtemp(prefix="bench-edge-"))
    rows = []
    try:
        for size in sizes:
            for kind in kinds:
                folder = work / f"{kind}-{size}"
                source = bases if kind == "minilm" else None
                figures = await measure(kind, size, source, queries, folder, hnsw_ef, sweep)
                rows.append((kind, size, figures))
                print(json.dumps({"kind": kind, "size": size, **figures}), flush=True)
                if keep is None:
                    shutil.rmtree(folder, ignore_errors=True)
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nQdrant Edge (embedded default), dim {DIMENSION}, hnsw_ef {hnsw_ef}, {queries} queries, "
        f"minilm bases: {base_set} ({0 if bases is None else len(bases):,})"
    )
    print(
        "| vectors | chunks | search p50 | p99 | recall@4 | start-up | index build | "
        "upserts/s | disk/chunk | memory/chunk | search-cache hit |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind, size, f in rows:
        print(
            f"| {kind} | {size:,} | {f['p50_ms']:.2f} ms | {f['p99_ms']:.2f} ms | "
            f"{f['recall']:.3f} | {f['start_s']:.2f} s | {f['build_s']:.0f} s | "
            f"{f['upsert_per_s']:,.0f} | {f['disk_per_chunk'] / 1024:.1f} KiB | "
            f"{f['rss_per_chunk'] / 1024:.2f} KiB | {f['cache_hit_ms']:.2f} ms |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--kinds", nargs="+", choices=["minilm", "random"], default=["minilm", "random"]
    )
    parser.add_argument("--bases", choices=["questions", "docs"], default="questions")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--keep", type=Path, help="build the stores here and keep them")
    parser.add_argument("--hnsw-ef", type=int, default=Settings().edge_hnsw_ef)
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also search each store warm at ef 64-512, +/- rescoring",
    )
    args = parser.parse_args()
    asyncio.run(
        run(
            sorted(args.sizes),
            args.kinds,
            args.bases,
            args.queries,
            args.keep,
            args.hnsw_ef,
            args.sweep,
        )
    )


if __name__ == "__main__":
    main()
