"""A document change, all or nothing (issue #25): what it costs and what readers and crashes see.

Real parts: MiniLM (one torch thread, as the server embeds), Qdrant local mode on a folder.

- **time**: a long document (``--chunks``, default ~375 chunks) replaced by another version of
  itself, in turns (ABBA over ``--rounds``) by today's path (``Ingestor.write``: staged write,
  switch, then collection) and by the path before issue 25, replayed here (delete the document's
  points, embed and upsert, record a new version). Reports seconds per replace and the ratio
  (goal <= 1.1); today's path also until its collection finished.
- **side by side** and **readers**: one more replace by today's path, untimed: points and
  folder size before it, after its switch (old and new both stored) and after its collection;
  the process's peak RSS; and a reader searching the document every 50 ms meanwhile: searches
  that saw the old version whole, the new one whole, or anything else (goal 0).
- **crashes** (``--crashes N``): a real ``rag serve`` killed with SIGKILL at a random moment of a
  replace over HTTP, N times; after a start (recovery), the document is found old, new, mixed or
  lost (goal: 0 mixed, 0 lost).

Usage: python scripts/bench_document_change.py [--chunks 375] [--rounds 2] [--crashes 5]
       [--crash-window-s 8]   (--rounds 0: the crashes only)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from qdrant_client import AsyncQdrantClient, models

from rag.corpus import open_corpus
from rag.corpus_version import CorpusVersion
from rag.embedding import SentenceTransformerEmbedder, default_model_path
from rag.ingest import Document, Ingestor, TokenChunker, _NoProgress
from rag.local import embedded_valkey
from rag.retrieval import QdrantRetriever
from rag.settings import Settings
from rag.tokens import get_encoding
from services.serving import free_port

ROOT = Path(__file__).resolve().parent.parent


def version_text(word: str, chunks: int) -> str:
    """About ``chunks`` chunks of the default 200 tokens, every paragraph naming ``word``."""
    return "\n\n".join(
        " ".join(f"The {word} note {p} says caches keep answers, item {s}." for s in range(14))
        for p in range(chunks)
    )


class Store:
    """One collection in the folder, its record, and an ingestor over it."""

    def __init__(
        self,
        client: AsyncQdrantClient,
        name: str,
        embedder: SentenceTransformerEmbedder,
        settings: Settings,
    ) -> None:
        self.client, self.name = client, name
        self.embedder, self.batch_size = embedder, settings.embedding_batch_size
        self.retriever = QdrantRetriever(client=client, collection=name, dimension=384)
        self.version = CorpusVersion(
            store=self.retriever, redis=None, namespace="bench", collection=name, poll_s=1
        )
        encoding = get_encoding(settings.tokenizer_encoding, settings.data_dir / "tiktoken")
        self.ingestor = Ingestor(
            embedder=embedder,
            retriever=self.retriever,
            chunker=TokenChunker(
                encoding=encoding, size=settings.chunk_tokens, overlap=settings.chunk_overlap_tokens
            ),
            corpus_version=self.version,
            batch_size=settings.embedding_batch_size,
            collect_after_s=3600,  # collected explicitly here, to time it
            switch_chunks=settings.ingest_switch_chunks,
        )

    async def open(self) -> None:
        await self.retriever.ensure_collection()
        await self.version.start()

    async def stored(self) -> int:
        return (await self.client.count(self.name, exact=True)).count

    async def old_path(self, document: Document) -> None:
        """The replace before issue 25: delete the document's points first, then the same
        embedding and upserts as today (its private step, reused so that only the order and
        the switch differ), then a new version."""
        chunks = self.ingestor.chunk(document)
        selector = models.Filter(
            must=[
                models.FieldCondition(key="doc_id", match=models.MatchValue(value=document.doc_id))
            ]
        )
        await self.client.delete(self.name, points_selector=models.FilterSelector(filter=selector))
        await self.ingestor._embed_and_upsert(chunks, _NoProgress(), {document.doc_id: "replayed"})
        await self.version.switch(reveal={"replayed": document.doc_id})


async def watch(
    store: Store, doc_id: str, versions: dict[str, list[str]], until: asyncio.Task[object]
) -> Counter[str]:
    probe = np.ones(384, dtype=np.float32) / np.sqrt(384)
    seen: Counter[str] = Counter()
    while True:
        done = until.done()  # one more search once it is: the new version, whole
        found = await store.retriever.search(probe, 10_000)
        texts = sorted(f.chunk.text for f in found if f.chunk.doc_id == doc_id)
        names = [name for name, expected in versions.items() if texts == expected]
        seen[names[0] if names else "neither"] += 1
        if done:
            return seen
        await asyncio.sleep(0.05)


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


async def timing(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-change-") as tmp:
        settings = Settings(data_dir=Path(tmp), seed_sample_corpus=False)
        embedder = SentenceTransformerEmbedder(
            model_path=default_model_path(), model_id="all-MiniLM-L6-v2", batch_size=64
        )
        client = AsyncQdrantClient(path=str(Path(tmp) / "qdrant"))
        today, before = (Store(client, n, embedder, settings) for n in ("today", "before"))
        for store in (today, before):
            await store.open()
        texts = {w: version_text(w, args.chunks * 4 // 5) for w in ("alpha", "beta")}
        docs = {w: Document("long.md", t, "long.md") for w, t in texts.items()}
        expected = {w: sorted(c.text for c in today.ingestor.chunk(d)) for w, d in docs.items()}
        print(f"document of {len(expected['alpha'])} chunks; load average {os.getloadavg()[0]:.1f}")
        await today.ingestor.add([docs["alpha"]])
        await today.ingestor.collect()
        await before.old_path(docs["alpha"])
        spent: dict[str, list[float]] = {"today": [], "today+collect": [], "before": []}
        words = ["beta", "alpha"]
        for r in range(args.rounds):
            word = words[r % 2]
            for name in ("today", "before") if r % 2 == 0 else ("before", "today"):
                started = time.perf_counter()
                if name == "before":
                    await before.old_path(docs[word])
                    spent["before"].append(time.perf_counter() - started)
                    continue
                await today.ingestor.add([docs[word]])
                spent["today"].append(time.perf_counter() - started)
                await today.ingestor.collect()
                spent["today+collect"].append(time.perf_counter() - started)
            print(
                f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in spent.items()),
                flush=True,
            )
        # one more replace by today's path, untimed: a reader searching it, and the store
        old_word, word = words[(args.rounds + 1) % 2], words[args.rounds % 2]
        folder = Path(tmp) / "qdrant"
        sizes = [(await today.stored(), folder_mb(folder))]
        writing = asyncio.create_task(today.ingestor.add([docs[word]]))
        versions = {"old": expected[old_word], "new": expected[word]}
        readers = await watch(today, "long.md", versions, writing)
        await writing
        sizes.append((await today.stored(), folder_mb(folder)))
        await today.ingestor.collect()
        sizes.append((await today.stored(), folder_mb(folder)))
        await client.close()
        embedder.close()
    mean = {k: sum(v) / len(v) for k, v in spent.items()}
    print(
        f"\nreplace, mean of {args.rounds}: today {mean['today']:.2f} s (with its collection "
        f"{mean['today+collect']:.2f} s), before {mean['before']:.2f} s; ratio "
        f"{mean['today'] / mean['before']:.2f} ({mean['today+collect'] / mean['before']:.2f} "
        "with the collection; goal <= 1.1)"
    )
    (p0, mb0), (p1, mb1), (p2, mb2) = sizes
    print(
        f"points stored: {p0} before, {p1} after the switch (old and new side by side), {p2} "
        f"after the collection; folder {mb0:.1f} / {mb1:.1f} / {mb2:.1f} MB"
    )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak_mb:.0f} MB")
    print(f"searches during the replace: {dict(readers)} (goal: 'neither' 0)")


def crashes(args: argparse.Namespace) -> None:
    """Kill a real ``rag serve`` at random moments of a replace; what a start finds after."""
    rng = random.Random(25)
    verdicts: Counter[str] = Counter()
    versions = {"old": version_text("old", 4), "new": version_text("new", args.chunks * 4 // 5)}
    with embedded_valkey() as redis_url:
        for n in range(args.crashes):
            kill_at = rng.uniform(0.2, args.crash_window_s)
            verdict = crash_once(redis_url, versions, kill_at)
            verdicts[verdict] += 1
            print(f"crash {n + 1}: killed {kill_at:.1f} s into the replace: {verdict}", flush=True)
    print(f"\nafter {args.crashes} crashes: {dict(verdicts)}")
    print("(goal: never mixed or lost; new whenever the replace was acknowledged)")


def crash_once(redis_url: str, versions: dict[str, str], kill_at: float) -> str:
    with tempfile.TemporaryDirectory(prefix="bench-crash-") as tmp:
        namespace = f"crash-{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            "RAG_DATA_DIR": tmp,
            "RAG_REDIS_URL": redis_url,
            "RAG_NAMESPACE": namespace,
            "RAG_SEED_SAMPLE_CORPUS": "false",
            "RAG_LLM_BASE_URL": "http://127.0.0.1:9/v1",
        }
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        httpx.post(f"{url}/documents", json={"doc_id": "d", "text": versions["old"]}, timeout=60)
        reply: list[int] = []

        def replace() -> None:
            try:
                body = {"doc_id": "d", "text": versions["new"]}
                reply.append(httpx.post(f"{url}/documents", json=body, timeout=300).status_code)
            except httpx.TransportError:
                reply.append(0)

        writer = threading.Thread(target=replace)
        writer.start()
        time.sleep(kill_at)
        server.send_signal(signal.SIGKILL)
        server.wait()
        writer.join()
        verdict = asyncio.run(found(Path(tmp), redis_url, namespace, versions))
        return f"{verdict} ({'acknowledged' if reply == [201] else 'not acknowledged'})"


async def found(data_dir: Path, redis_url: str, namespace: str, versions: dict[str, str]) -> str:
    settings = Settings(
        data_dir=data_dir,
        redis_url=redis_url,
        namespace=namespace,
        seed_sample_corpus=False,
        llm_base_url="http://127.0.0.1:9/v1",
    )
    async with open_corpus(settings) as corpus:  # recovery runs here, as at a start
        probe = np.ones(384, dtype=np.float32) / np.sqrt(384)
        seen = sorted(f.chunk.text for f in await corpus.retriever.search(probe, 100_000))
        for name, text in versions.items():
            if seen == sorted(c.text for c in corpus.ingestor.chunk(Document("d", text, ""))):
                return name
        return "lost" if not seen else "mixed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=375, help="chunks of the long version")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--crashes", type=int, default=0, help="kills of a real rag serve")
    parser.add_argument("--crash-window-s", type=float, default=8.0)
    args = parser.parse_args()
    if args.rounds:  # --rounds 0: the crashes only
        asyncio.run(timing(args))
    if args.crashes:
        crashes(args)


if __name__ == "__main__":
    main()
