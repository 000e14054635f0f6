"""A crash mid-write loses nothing (issue #25): a real ``rag serve`` is killed with SIGKILL at
several moments of a long replace, and a real ``rag ingest`` of a folder half-way; the next start
(``open_corpus``, as ``rag serve`` and ``rag ingest`` open it) finds every document old or new,
whole, never mixed or lost, and nothing staged left behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from rag.corpus import open_corpus
from rag.embedding import SentenceTransformerEmbedder
from rag.ingest import Document
from rag.settings import Settings
from tests.conftest import Running, start_app_process
from tests.paths import ROOT


def long_text(word: str, paragraphs: int) -> str:
    return "\n\n".join(
        " ".join(f"{word} paragraph {p} sentence {s} about caches." for s in range(12))
        for p in range(paragraphs)
    )


def settings_for(data_dir: Path, valkey_url: str, namespace: str) -> Settings:
    return Settings(
        data_dir=data_dir,
        redis_url=valkey_url,
        namespace=namespace,
        seed_sample_corpus=False,
        llm_base_url="http://127.0.0.1:9/v1",  # never called: no question is asked
    )


def env_for(valkey_url: str, namespace: str) -> dict[str, str]:
    return {
        "RAG_REDIS_URL": valkey_url,
        "RAG_NAMESPACE": namespace,
        "RAG_SEED_SAMPLE_CORPUS": "false",
        "RAG_LLM_BASE_URL": "http://127.0.0.1:9/v1",
    }


def found_versions(
    settings: Settings, embedder: SentenceTransformerEmbedder, documents: dict[str, dict[str, str]]
) -> dict[str, str]:
    """Open the corpus as a start does (recovering what a dead writer left) and name, per
    document, the version search sees whole: "old", "new", or "mixed"/"lost"."""

    async def check() -> dict[str, str]:
        async with open_corpus(settings, embedder=embedder) as corpus:
            probe = np.ones(embedder.dimension, dtype=np.float32)
            probe /= np.linalg.norm(probe)
            seen = await corpus.retriever.search(probe, 100_000)
            staged = [p for p in await corpus.retriever.stored() if p["staged"]]
            assert not staged, "a start left staged chunks behind"
            verdicts = {}
            for doc_id, versions in documents.items():
                texts = sorted(f.chunk.text for f in seen if f.chunk.doc_id == doc_id)
                verdicts[doc_id] = "lost" if not texts else "mixed"
                for name, text in versions.items():
                    expected = corpus.ingestor.chunk(Document(doc_id, text, ""))
                    if texts == sorted(c.text for c in expected):
                        verdicts[doc_id] = name
            return verdicts

    return asyncio.run(check())


@pytest.mark.parametrize("kill_after_s", [0.5, 2.0, "acknowledged"])
def test_a_server_killed_during_a_replace_keeps_the_document_old_or_new(
    tmp_path: Path,
    valkey_url: str,
    embedder: SentenceTransformerEmbedder,
    kill_after_s: float | str,
) -> None:
    namespace = f"crash-{uuid.uuid4().hex[:8]}"
    old, new = long_text("old", 2), long_text("new", 200)  # ~140 chunks: seconds of embedding
    server, url = start_app_process(env_for(valkey_url, namespace), tmp_path)
    try:
        created = httpx.post(f"{url}/documents", json={"doc_id": "manual", "text": old}, timeout=60)
        assert created.status_code == 201
        replies: list[int] = []

        def replace() -> None:
            try:
                body = {"doc_id": "manual", "text": new}
                replies.append(httpx.post(f"{url}/documents", json=body, timeout=120).status_code)
            except httpx.TransportError:
                replies.append(0)  # killed before it answered

        writer = threading.Thread(target=replace)
        writer.start()
        if kill_after_s == "acknowledged":  # after the switch, before the collection
            writer.join(timeout=120)
        else:
            time.sleep(float(kill_after_s))
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        writer.join(timeout=30)
    finally:
        server.kill()
    verdict = found_versions(
        settings_for(tmp_path, valkey_url, namespace),
        embedder,
        {"manual": {"old": old, "new": new}},
    )
    assert verdict["manual"] in ("old", "new")
    if kill_after_s == 0.5:
        assert replies == [0], "the write was meant to be killed half-way"
    if replies == [201]:  # acknowledged: the new version, whatever happened after
        assert verdict["manual"] == "new"


def test_an_ingest_killed_half_way_leaves_each_document_old_or_new_and_a_rerun_finishes(
    tmp_path: Path, valkey_url: str, embedder: SentenceTransformerEmbedder
) -> None:
    namespace = f"crash-{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "docs"
    folder.mkdir()
    documents = {f"d{i}.md": {"old": long_text(f"old{i}", 1)} for i in range(12)}
    env = {**os.environ, **env_for(valkey_url, namespace), "RAG_DATA_DIR": str(tmp_path / "data")}
    env["RAG_INGEST_SWITCH_CHUNKS"] = "8"  # several switches in the folder

    def ingest() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", "ingest", str(folder)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    for doc_id, versions in documents.items():
        (folder / doc_id).write_text(versions["old"])
    assert ingest().wait(timeout=300) == 0
    for i, (doc_id, versions) in enumerate(documents.items()):
        versions["new"] = long_text(f"new{i}", 12)
        (folder / doc_id).write_text(versions["new"])
    rerun = ingest()
    time.sleep(8)  # model loaded, some documents switched
    rerun.send_signal(signal.SIGKILL)
    rerun.wait(timeout=30)
    settings = settings_for(tmp_path / "data", valkey_url, namespace)
    verdicts = found_versions(settings, embedder, documents)
    assert set(verdicts.values()) <= {"old", "new"}, verdicts
    assert ingest().wait(timeout=300) == 0  # re-run to finish
    assert set(found_versions(settings, embedder, documents).values()) == {"new"}


def test_a_client_that_leaves_mid_write_changes_nothing(running: Running) -> None:
    """``POST /documents`` of a long document by a client that hangs up once the server has
    begun writing it: the write is cancelled, the corpus and its version are as before, and
    what it had staged is gone."""
    corpus = running.app.state.services.corpus

    def stored() -> int:  # every point, staged or not (the store is safe to read from here)
        return len(asyncio.run(corpus.retriever.stored()))

    def wait_for(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 30
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.1)

    before = httpx.get(f"{running.url}/healthz", timeout=10).json()
    body = json.dumps({"doc_id": "left-mid-write", "text": long_text("left", 300)}).encode()
    url = httpx.URL(running.url)
    with socket.create_connection((url.host, url.port)) as client:
        head = f"POST /documents HTTP/1.1\r\nHost: {url.host}\r\nContent-Type: application/json"
        client.sendall(f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_for(lambda: stored() > before["chunks"], "the server never began the write")
    wait_for(lambda: stored() == before["chunks"], "what the write staged was not discarded")
    after = httpx.get(f"{running.url}/healthz", timeout=10).json()
    assert (after["chunks"], after["corpus_version"]) == (
        before["chunks"],
        before["corpus_version"],
    )
