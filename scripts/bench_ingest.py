"""Ingestion against the embedding model's own speed, on the same chunks, in one run (issue 16).

Corpus: 150 generated Markdown documents (deterministic text, no downloads) that the default
settings cut into about 3,500 chunks of 200 tokens; or the files of ``--corpus DIR``.

The documents are split into ``--slices`` runs of consecutive documents. For each slice, in
turns (raw first on even slices, ingestion first on odd ones), so that the noise of a shared
machine falls on every path alike:

- raw: ``SentenceTransformer.encode(texts, batch_size=64)`` on the slice's chunk texts, a model
  of its own, torch's default thread count, in the main thread: the model's own speed;
- ingest: what ``rag ingest`` does once its parts are open: ``embedder.use_threads(
  ingest_threads)``, ``ingestor.plan`` (chunking), ``ingestor.write`` (delete, embed, upsert,
  corpus version bump) into a fresh default store (Qdrant Edge), on an embedded Valkey;
- baseline (``--baseline``): the ingestion path as it was before issue 16, replayed here: one
  torch thread, chunking twice (the progress bar's count, then the ingest), calls of 64 chunks in
  document order, each upsert waited for before the next batch is embedded.

chunks/s per path = all chunks / all seconds of that path; the ratio is ingest / raw (target
>= 0.90). Model loading and opening the parts are outside the timings, for every path.

Usage: python scripts/bench_ingest.py [--quick] [--baseline] [--slices 10] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from qdrant_client import AsyncQdrantClient
from sentence_transformers import SentenceTransformer

from rag.corpus import Corpus, open_corpus
from rag.embedding import SentenceTransformerEmbedder, default_model_path
from rag.ingest import Document, collect_documents
from rag.local import embedded_valkey
from rag.retrieval import QdrantRetriever
from rag.settings import Settings

RAW_BATCH = 64

_WORDS = """
the a an of to in for on with by from at as into over under between through about after before
during without within across against among cache caches cached caching layer layers key keys value
values entry entries store stores Redis Valkey server servers client clients request requests
response responses query queries question questions answer answers document documents chunk chunks
token tokens vector vectors embedding embeddings model models search index indexes collection corpus
version versions stream streams event events latency throughput memory disk network time seconds
minutes hours days week expiry TTL policy eviction hit hits miss misses rate ratio cost price money
user users tenant tenants service services process processes thread threads worker workers machine
CPU core cores load traffic peak burst queue lock locks lease owner writer reader replica primary
cluster slot shard node nodes failover restart backup snapshot log logs metric metrics histogram
counter gauge alert dashboard operator engineer team product feature release deploy rollout test
tests benchmark profile trace span error errors timeout retry backoff fallback default setting
settings configuration environment variable file folder path name id hash digest schema format JSON
binary text string list map set number integer float boolean field header body status code route
endpoint handler function method class module package library framework database table row column
when while because although unless until since if then so therefore however moreover instead also
only always never often sometimes usually rarely quickly slowly safely correctly exactly roughly
new old fresh stale warm cold hot small large big tiny long short fast slow cheap expensive simple
complex stable noisy shared private local remote global partial complete empty full valid invalid
is are was were be been being has have had do does did can could should would may might must will
read reads write writes keep keeps drop drops serve serves build builds send sends return returns
compute computes compare compares measure measures count counts split splits join joins merge
update updates delete deletes insert inserts fetch fetches scan scans sort sorts filter filters
start starts stop stops wait waits run runs fail fails recover recovers grow grows shrink shrinks
""".split()
_TOPICS = """caching retrieval embeddings streaming invalidation eviction sessions tenants
metrics pricing clusters failover prompts ranking chunking ingestion batching limits security
sizing""".split()


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(7, 22))]
    if rng.random() < 0.15:
        words.insert(rng.randrange(len(words)), f"`{rng.choice(_WORDS)}_{rng.randint(1, 99)}`")
    if rng.random() < 0.1:
        words.insert(rng.randrange(len(words)), str(rng.randint(2, 90_000)))
    return " ".join(words).capitalize() + rng.choice(".....?!")


def _markdown(rng: random.Random, n: int, words: int) -> str:
    lines = [f"# {_TOPICS[n % len(_TOPICS)].capitalize()} notes, part {n + 1}", ""]
    written = section = 0
    while written < words:
        if written == 0 or rng.random() < 0.25:
            section += 1
            title = " ".join(rng.choice(_WORDS) for _ in range(3)).capitalize()
            lines += [f"## {section}. {title}", ""]
        if rng.random() < 0.2:
            block = [f"- {_sentence(rng)}" for _ in range(rng.randint(2, 5))]
        else:
            block = [" ".join(_sentence(rng) for _ in range(rng.randint(2, 6)))]
        lines += [*block, ""]
        written += sum(len(b.split()) for b in block)
    return "\n".join(lines)


def generated_corpus(documents: int, seed: int = 16) -> list[Document]:
    """``documents`` Markdown notes of 1,250-5,000 words of English technical vocabulary (about
    23 chunks of 200 tokens each on average); the same text for the same arguments."""
    rng = random.Random(seed)
    docs = []
    for n in range(documents):
        doc_id = f"{_TOPICS[n % len(_TOPICS)]}-{n:03d}.md"
        text = _markdown(rng, n, rng.randint(1256, 5024))
        docs.append(Document(doc_id=doc_id, text=text, source=f"generated/{doc_id}"))
    return docs


async def _ingest(corpus: Corpus, documents: Sequence[Document], threads: int) -> float:
    """``rag ingest``'s work once its parts are open (see ``services.cli.cmd_ingest``)."""
    started = time.perf_counter()
    corpus.embedder.use_threads(threads)
    plan = corpus.ingestor.plan(documents)
    await corpus.ingestor.write(plan)
    return time.perf_counter() - started


async def _baseline(
    corpus: Corpus, documents: Sequence[Document], folder: Path, spent: dict[str, float]
) -> float:
    """The path before issue 16: one torch thread, chunks counted for the bar and then chunked
    again, calls of ``embedding_batch_size`` texts in document order, embed then upsert. Adds
    the seconds of its embed and upsert calls to ``spent``."""
    client = AsyncQdrantClient(path=str(folder))
    retriever = QdrantRetriever(client=client, collection="bench", dimension=384)
    await retriever.ensure_collection()
    batch_size = corpus.settings.embedding_batch_size
    started = time.perf_counter()
    corpus.embedder.use_threads(1)
    sum(len(corpus.ingestor.chunk(d)) for d in documents)
    chunks = corpus.ingestor.plan(documents).chunks
    generations = {doc_id: "baseline" for doc_id in dict.fromkeys(c.doc_id for c in chunks)}
    for start in range(0, len(chunks), batch_size):
        batch = chunks[start : start + batch_size]
        step = time.perf_counter()
        vectors = await corpus.embedder.embed([c.text for c in batch])
        spent["embed"] += time.perf_counter() - step
        step = time.perf_counter()
        await retriever.upsert(batch, vectors, generations)
        spent["upsert"] += time.perf_counter() - step
    await corpus.corpus_version.bump()
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed


def _raw(model: SentenceTransformer, texts: list[str]) -> float:
    started = time.perf_counter()
    model.encode(texts, batch_size=RAW_BATCH, show_progress_bar=False)
    return time.perf_counter() - started


@dataclass
class Tally:
    """Seconds per path over all slices, each slice's raw/ingest ratio, and the chunks timed."""

    names: list[str]
    seconds: dict[str, float] = field(init=False)
    ratios: list[float] = field(default_factory=list)
    spent: dict[str, float] = field(default_factory=lambda: {"embed": 0.0, "upsert": 0.0})
    chunks: int = 0

    def __post_init__(self) -> None:
        self.seconds = dict.fromkeys(self.names, 0.0)

    def add(self, i: int, chunks: int, took: dict[str, float]) -> None:
        """Count one slice and print its row."""
        self.chunks += chunks
        for name in self.names:
            self.seconds[name] += took[name]
        self.ratios.append(took["raw encode"] / took["ingest"])
        rates = "".join(f"{chunks / took[n]:>12.1f}/s" for n in self.names)
        print(f"{i:>5} {chunks:>6}  {rates}  {self.ratios[-1]:.2f}", flush=True)


def _slices(documents: list[Document], slices: int) -> list[list[Document]]:
    size = -(-len(documents) // max(1, min(slices, len(documents))))
    return [documents[i : i + size] for i in range(0, len(documents), size)]


async def _time_slice(
    i: int,
    corpus: Corpus,
    part: list[Document],
    raw_model: SentenceTransformer,
    tally: Tally,
    threads: int,
) -> tuple[int, dict[str, float]]:
    """Every path on one slice, in turns (ABBA over the slices); its chunk count and timings."""
    texts = [c.text for c in corpus.ingestor.plan(part).chunks]
    took: dict[str, float] = {}
    for name in tally.names if i % 2 == 0 else reversed(tally.names):
        if name == "raw encode":
            took[name] = _raw(raw_model, texts)
        elif name == "ingest":
            took[name] = await _ingest(corpus, part, threads)
        else:
            baseline_dir = corpus.settings.data_dir / "baseline"
            took[name] = await _baseline(corpus, part, baseline_dir, tally.spent)
    return len(texts), took


def _report(tally: Tally, baseline: bool) -> None:
    total, seconds, spent = tally.chunks, tally.seconds, tally.spent
    raw_rate = total / seconds["raw encode"]
    print(f"\n{total} chunks; load average {os.getloadavg()[0]:.1f} at the end")
    for name in tally.names:
        rate = total / seconds[name]
        print(f"  {name:<11} {rate:7.1f} chunks/s  ({rate / raw_rate:.2f} of raw encode)")
    if baseline:
        rest = seconds["baseline"] - spent["embed"] - spent["upsert"]
        print(
            f"baseline's {seconds['baseline']:.0f} s: embedding {spent['embed']:.0f} s (raw "
            f"encode of the same chunks: {seconds['raw encode']:.0f} s), upserts "
            f"{spent['upsert']:.0f} s ({total / spent['upsert']:.0f} points/s), chunking twice, "
            f"deletes and the rest {rest:.1f} s"
        )
    print(
        f"ingest / raw = {total / seconds['ingest'] / raw_rate:.2f} "
        f"(median over slices {statistics.median(tally.ratios):.2f}; target >= 0.90)"
    )


async def run(documents: list[Document], slices: int, baseline: bool) -> None:
    default_threads = torch.get_num_threads()  # what a plain script gets
    raw_model = SentenceTransformer(str(default_model_path()), device="cpu")
    embedder = SentenceTransformerEmbedder(
        model_path=default_model_path(), model_id="all-MiniLM-L6-v2", batch_size=RAW_BATCH
    )
    torch.set_num_threads(default_threads)  # the embedder set this thread to one: raw gets all
    parts = _slices(documents, slices)
    tally = Tally(names=["raw encode", "ingest", *(["baseline"] if baseline else [])])
    with embedded_valkey() as redis_url, tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        root = Path(tmp)
        settings = Settings(
            data_dir=root / "data",
            redis_url=redis_url,
            namespace=f"bench-{uuid.uuid4().hex[:8]}",
            seed_sample_corpus=False,
        )
        threads = settings.ingest_threads
        print(
            f"{len(documents)} documents in {len(parts)} slices; torch threads: raw "
            f"{default_threads}, ingest {embedder.use_threads(threads)} (ingest_threads="
            f"{threads}), baseline 1; load average {os.getloadavg()[0]:.1f}, "
            f"{os.cpu_count()} cores"
        )
        names = "".join(f"{n:>14}" for n in tally.names)
        print(f"{'slice':>5} {'chunks':>6}  {names}  ingest/raw")
        for i, part in enumerate(parts):
            update = {"data_dir": root / f"slice-{i}"}
            async with open_corpus(settings.model_copy(update=update), embedder=embedder) as corpus:
                chunks, took = await _time_slice(i, corpus, part, raw_model, tally, threads)
            tally.add(i, chunks, took)
    embedder.close()
    _report(tally, baseline)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="12 documents, 2 slices")
    parser.add_argument("--documents", type=int, default=150, help="generated documents")
    parser.add_argument("--slices", type=int, default=10)
    parser.add_argument("--baseline", action="store_true", help="also the path before issue 16")
    parser.add_argument("--corpus", type=Path, help="ingest these files instead (.md/.txt/.html)")
    args = parser.parse_args()
    if args.quick:
        args.documents, args.slices = 12, 2
    documents = (
        collect_documents([args.corpus]) if args.corpus else generated_corpus(args.documents)
    )
    asyncio.run(run(documents, args.slices, args.baseline))


if __name__ == "__main__":
    main()
