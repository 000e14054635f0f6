"""Security and bad input: tenants (one per API key) never share cache entries or sessions;
production settings refuse placeholder keys; request bodies are bounded; no pickle anywhere.
The LLM transport is scripted (deterministic, fast); cache store, vector DB and embedder are
real."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from rag.embedding import SentenceTransformerEmbedder
from rag.settings import Settings
from tests.conftest import ScriptedApp, keys_of, serve_scripted

ACME = "acme-key-0123456789abcdef"
GLOBEX = "globex-key-0123456789abcdef"
ANON = "anonymous-key-0123456789abcdef"  # a bare key: its tenant is named after its hash


@pytest.fixture(scope="module")
def tenants(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder, valkey_url: str
) -> Iterator[ScriptedApp]:
    keys = [f"acme:{ACME}", f"globex:{GLOBEX}", ANON]
    with serve_scripted(
        tmp_path_factory, embedder, valkey_url, "tenants", api_keys=keys, max_body_bytes=64_000
    ) as running:
        yield running


def ask(running: ScriptedApp, key: str | None, query: str, **body: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(
        f"{running.url}/ask", json={"query": query, **body}, headers=headers, timeout=60
    )


def test_ask_needs_one_of_the_api_keys(tenants: ScriptedApp) -> None:
    assert ask(tenants, None, "What is Redis?").status_code == 401
    assert ask(tenants, "wrong-key", "What is Redis?").status_code == 401
    assert ask(tenants, ANON, "What is Redis?").status_code == 200
    r = httpx.get(f"{tenants.url}/ask/stream", params={"query": "What is Redis?"})
    assert r.status_code == 401
    assert "RAG_API_KEYS" in r.json()["detail"]


def test_tenants_never_share_exact_entries(tenants: ScriptedApp) -> None:
    question = "How long are answers cached?"
    assert ask(tenants, ACME, question).json()["cache"]["llm"] == "miss"
    assert ask(tenants, ACME, question).json()["cache"] == {
        "embedding": "hit",
        "search": "hit",
        "llm": "hit",
    }
    calls = tenants.llm.calls
    other = ask(tenants, GLOBEX, question).json()
    assert other["cache"] == {"embedding": "miss", "search": "miss", "llm": "miss"}
    assert tenants.llm.calls == calls + 1

    base = tenants.settings.namespace
    acme_keys = keys_of(tenants.settings.redis_url, f"{base}.acme")
    globex_keys = keys_of(tenants.settings.redis_url, f"{base}.globex")
    assert acme_keys and globex_keys
    assert not set(acme_keys) & set(globex_keys)


def test_tenants_never_share_semantic_entries(tenants: ScriptedApp) -> None:
    semantic = {"cache": {"semantic": True}}
    assert ask(tenants, ACME, "What is the capital of France?", **semantic).is_success
    same_tenant = ask(tenants, ACME, "What is the capital of France ?", **semantic).json()
    assert same_tenant["cache"]["llm"] == "semantic"  # the pair does match…

    other = ask(tenants, GLOBEX, "What is the capital of France ?", **semantic).json()
    assert other["cache"]["llm"] == "miss"  # …but never across tenants
    assert "semantic" not in other or other["semantic"] is None


def test_tenants_never_see_each_others_sessions(tenants: ScriptedApp) -> None:
    assert ask(tenants, ACME, "What is Redis?", session_id="shared-name").is_success
    acme = {"Authorization": f"Bearer {ACME}"}
    globex = {"Authorization": f"Bearer {GLOBEX}"}
    assert httpx.get(f"{tenants.url}/sessions/shared-name", headers=acme).status_code == 200
    assert httpx.get(f"{tenants.url}/sessions/shared-name", headers=globex).status_code == 404
    assert httpx.get(f"{tenants.url}/sessions/shared-name").status_code == 401


def test_admin_invalidation_reaches_every_tenant(tenants: ScriptedApp) -> None:
    question = "Which layer caches vectors?"
    for key in (ACME, GLOBEX):
        ask(tenants, key, question)
        assert ask(tenants, key, question).json()["cache"]["llm"] == "hit"
    r = httpx.post(f"{tenants.url}/cache/invalidate", json={"layer": "llm"})
    assert r.status_code == 200 and r.json()["deleted"] >= 2
    for key in (ACME, GLOBEX):
        assert ask(tenants, key, question).json()["cache"]["llm"] == "miss"


def test_bodies_over_the_limit_get_413_before_anything_is_read(tenants: ScriptedApp) -> None:
    big = "x" * 70_000
    r = httpx.post(f"{tenants.url}/documents", json={"doc_id": "big", "text": big}, timeout=30)
    assert r.status_code == 413
    assert "64000 bytes" in r.json()["detail"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"doc_id": "big", "text": "'
        for _ in range(80):
            yield b"y" * 1000
        yield b'"}'

    r = httpx.post(
        f"{tenants.url}/documents",
        content=chunked(),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 413, r.text


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"query": ""}, 422, "query"),
        ({"query": "x" * 2001}, 400, "longer than 2000"),
        ({"query": "What is Redis?", "top_k": 0}, 422, "top_k"),
        ({"query": "What is Redis?", "top_k": 21}, 400, "top_k"),
        ({"query": "What is Redis?", "cache": {"threshold": 1.5}}, 422, "threshold"),
        ({"query": "What is Redis?", "cache": {"mode": "sometimes"}}, 422, "mode"),
        ({"query": "What is Redis?", "unknown": 1}, 422, "unknown"),
    ],
)
def test_bad_input_gets_a_clear_4xx(
    tenants: ScriptedApp, body: dict[str, object], status: int, says: str
) -> None:
    r = httpx.post(
        f"{tenants.url}/ask", json=body, headers={"Authorization": f"Bearer {ACME}"}, timeout=30
    )
    assert r.status_code == status, r.text
    assert says in r.text


def test_production_refuses_missing_and_placeholder_keys(tmp_path: Path) -> None:
    good = "k" * 32
    base = {"data_dir": tmp_path, "environment": "production"}
    with pytest.raises(ValidationError, match="needs admin_api_key"):
        Settings(**base)  # type: ignore[arg-type]
    for placeholder in ["changeme", "change-me-in-production-please", "your-api-key-goes-here"]:
        with pytest.raises(ValidationError, match="placeholder"):
            Settings(**base, admin_api_key=placeholder)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="placeholder"):
            Settings(**base, admin_api_key=good, api_keys=[f"acme:{placeholder}"])  # type: ignore[arg-type]
    Settings(**base, admin_api_key=good, api_keys=[f"acme:{'a' * 24}"])  # type: ignore[arg-type]
    Settings(data_dir=tmp_path, admin_api_key="changeme")  # type: ignore[arg-type]  # development
    with pytest.raises(ValidationError, match="same key twice"):
        Settings(data_dir=tmp_path, api_keys=["a:samekey", "b:samekey"])  # type: ignore[arg-type]


def test_no_pickle_anywhere() -> None:
    root = Path(__file__).resolve().parent.parent
    sources = [*root.glob("rag/**/*.py"), *root.glob("services/**/*.py")]
    assert sources
    offenders = [
        str(path)
        for path in sources
        if re.search(r"^\s*(import|from)\s+(c?pickle|dill|shelve)\b", path.read_text(), re.M)
    ]
    assert offenders == []
