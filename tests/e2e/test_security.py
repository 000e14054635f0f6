"""Security: tenants (one per API key) never share cache entries or sessions; keys guard every
endpoint; production settings refuse placeholder keys; no pickle anywhere (bad input:
``test_input_validation.py``).
The LLM transport is scripted (deterministic, fast); cache store, vector DB and embedder are
real."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from rag.embedding import SentenceTransformerEmbedder
from rag.settings import Settings
from rag.wiring import Services
from services.api.deps import get_services
from services.app import create_app
from tests.conftest import ScriptedApp, keys_of, serve_scripted
from tests.e2e.conftest import ACME, ADMIN, ANON, BEARER_ADMIN, GLOBEX, ask
from tests.paths import ROOT
from tests.scripted_llm import WORDS
from tests.sse import parse


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
    r = httpx.post(f"{tenants.url}/cache/invalidate", json={"layer": "llm"}, headers=BEARER_ADMIN)
    assert r.status_code == 200 and r.json()["deleted"] >= 2
    for key in (ACME, GLOBEX):
        assert ask(tenants, key, question).json()["cache"]["llm"] == "miss"


def test_stats_and_metrics_need_a_key_when_api_keys_are_set(tenants: ScriptedApp) -> None:
    for path in ("/stats", "/metrics"):
        assert httpx.get(f"{tenants.url}{path}").status_code == 401
        wrong = httpx.get(f"{tenants.url}{path}", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "RAG_API_KEYS" in wrong.json()["detail"]
        for key in (ACME, ANON, ADMIN):
            r = httpx.get(f"{tenants.url}{path}", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200, (path, key, r.text)
    assert httpx.get(f"{tenants.url}/healthz").status_code == 200  # stays open for probes


def test_metrics_can_have_its_own_key(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder, valkey_url: str
) -> None:
    """With RAG_METRICS_API_KEY set, /metrics takes that key only, and that key opens nothing
    else."""
    scraper = "scraper-key-0123456789abcdef"
    keys = {"api_keys": [f"acme:{ACME}"], "admin_api_key": ADMIN, "metrics_api_key": scraper}
    with serve_scripted(tmp_path_factory, embedder, valkey_url, "scrape", **keys) as app:

        def get(path: str, key: str | None) -> httpx.Response:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return httpx.get(f"{app.url}{path}", headers=headers)

        for key in (None, ACME, ADMIN):
            refused = get("/metrics", key)
            assert refused.status_code == 401 and "RAG_METRICS_API_KEY" in refused.text
        scraped = get("/metrics", scraper)
        assert scraped.status_code == 200 and "rag_llm_calls_total" in scraped.text
        assert get("/stats", scraper).status_code == 401
        assert get("/stats", ACME).status_code == 200
        assert ask(app, scraper, "What is Redis?").status_code == 401


def test_a_tenant_over_its_rate_gets_429_and_other_tenants_do_not(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder, valkey_url: str
) -> None:
    keys = {"api_keys": [f"acme:{ACME}", f"globex:{GLOBEX}"], "admin_api_key": ADMIN}
    rate = {"tenant_rate_per_s": 0.05, "tenant_burst": 2}
    with serve_scripted(tmp_path_factory, embedder, valkey_url, "rate", **keys, **rate) as app:
        for _ in range(2):
            assert ask(app, ACME, "What is Redis?").status_code == 200
        for over in (
            ask(app, ACME, "What is Redis?"),
            httpx.post(
                f"{app.url}/ask/stream",
                json={"query": "What is Redis?"},
                headers={"Authorization": f"Bearer {ACME}"},
            ),
        ):
            assert over.status_code == 429, over.text
            assert int(over.headers["retry-after"]) >= 1
            assert "requests per second" in over.json()["detail"]
        assert ask(app, GLOBEX, "What is Redis?").status_code == 200  # its own bucket
        assert httpx.get(f"{app.url}/healthz").status_code == 200  # probes are not counted


def test_an_idle_stream_gets_keep_alive_comments(
    tenants: ScriptedApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fastapi.routing

    monkeypatch.setattr(fastapi.routing, "_PING_INTERVAL", 0.03)  # "slow": 0.1 s between words
    r = httpx.post(
        f"{tenants.url}/ask/stream",
        json={"query": "Please answer slow: what is cached?", "cache": {"mode": "no-store"}},
        headers={"Authorization": f"Bearer {ACME}"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert ": ping\n\n" in r.text
    events = parse(r.text)
    assert [name for name, _ in events][:1] == ["meta"] and events[-1][0] == "done"
    assert "".join(d["text"] for n, d in events if n == "token") == "".join(WORDS * 6)


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b"", "application/json"),
        (b"{", "application/json"),
        (b'{"query": 5}', "application/json"),
        (b'{"query": "x", "top_k": "4"}', "application/json"),
        (b'{"query": "\\ud800"}', "application/json"),
        (b'{"query": "x", "cache": {"threshold": NaN}}', "application/json"),
        (b'{"query": "x", "extra": 1}', "application/json; charset=utf-8"),
        (b'{"query": "x"}', "text/plain"),
        (b'{"query": "x"}', None),
    ],
)
def test_the_lean_ask_route_refuses_bodies_exactly_as_fastapi_does(
    tenants: ScriptedApp, raw: bytes, content_type: str | None
) -> None:
    """POST /ask parses its body itself (one pydantic-core pass); POST /ask/stream leaves it to
    FastAPI. Every refusal must be the same: status and detail."""
    headers = {"Authorization": f"Bearer {ACME}"}
    if content_type:
        headers["Content-Type"] = content_type
    answers = [
        httpx.post(f"{tenants.url}{path}", content=raw, headers=headers, timeout=30)
        for path in ("/ask", "/ask/stream")
    ]
    assert answers[0].status_code == answers[1].status_code == 422, answers[0].text
    assert answers[0].json() == answers[1].json()


def test_a_client_leaving_a_stream_early_is_not_a_server_error(
    tenants: ScriptedApp, caplog: pytest.LogCaptureFixture
) -> None:
    """FastAPI's SSE keep-alive task raised BrokenResourceError (logged with a traceback as an
    unhandled error) when the client left while it was handing on an event."""
    headers = {"Authorization": f"Bearer {ACME}"}
    body = {"query": "Which caches does a repeated question use?"}
    assert httpx.post(f"{tenants.url}/ask", json=body, headers=headers).status_code == 200
    server_log = logging.getLogger("uvicorn.error")  # does not propagate to the root logger
    server_log.addHandler(caplog.handler)
    with caplog.at_level(logging.INFO), httpx.Client(base_url=tenants.url, timeout=30) as client:
        for _ in range(100):  # the cached answer replays at once: the task is mid-send
            with client.stream("POST", "/ask/stream", json=body, headers=headers) as r:
                assert r.status_code == 200
                assert "event: token" in r.iter_lines()  # read up to the first token, then leave
        assert ask(tenants, ACME, body["query"]).status_code == 200
    server_log.removeHandler(caplog.handler)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def test_shed_load_is_a_503_with_retry_after(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder, valkey_url: str
) -> None:
    """With one generation allowed (none waiting), a second new question while a slow answer is
    generated gets a JSON 503 with Retry-After, by /ask and before /ask/stream starts."""
    limits = {"max_generations": 1, "max_waiting_generations": 0, "overload_retry_after_s": 7}
    with (
        serve_scripted(tmp_path_factory, embedder, valkey_url, "shed", **limits) as app,
        httpx.Client(base_url=app.url, timeout=60) as client,
        client.stream("POST", "/ask/stream", json={"query": "Answer slow: what is Redis?"}) as r,
    ):
        lines = r.iter_lines()
        assert next(lines) == "event: meta"  # the slow generation holds the one place
        for path in ("/ask", "/ask/stream"):
            shed = client.post(path, json={"query": "What is Qdrant?"})
            assert shed.status_code == 503, shed.text
            assert shed.headers["retry-after"] == "7"
            assert "retry in 7 s" in shed.json()["detail"]


def test_an_unexpected_error_is_a_json_500_that_tells_nothing(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))  # no lifespan: nothing is started

    def broken() -> Services:
        raise RuntimeError("secret internals")

    app.dependency_overrides[get_services] = broken
    r = TestClient(app, raise_server_exceptions=False).get("/healthz")
    assert r.status_code == 500
    assert r.json() == {"detail": "internal server error"}


def test_production_refuses_missing_and_placeholder_keys(tmp_path: Path) -> None:
    good = "k" * 32
    base = {"data_dir": tmp_path, "environment": "production"}
    with pytest.raises(ValidationError, match="needs admin_api_key"):
        Settings(**base)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="metrics_api_key equal to another key"):
        Settings(**base, admin_api_key=good, metrics_api_key=good)  # type: ignore[arg-type]
    for placeholder in ["changeme", "change-me-in-production-please", "your-api-key-goes-here"]:
        with pytest.raises(ValidationError, match="placeholder"):
            Settings(**base, admin_api_key=placeholder)  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="placeholder"):
            Settings(**base, admin_api_key=good, api_keys=[f"acme:{placeholder}"])  # type: ignore[arg-type]
    Settings(**base, admin_api_key=good, api_keys=[f"acme:{'a' * 24}"])  # type: ignore[arg-type]
    Settings(data_dir=tmp_path, admin_api_key="changeme")  # type: ignore[arg-type]  # development
    with pytest.raises(ValidationError, match="same key twice"):
        Settings(data_dir=tmp_path, api_keys=["a:samekey", "b:samekey"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("admin", "api_keys", "says"),
    [
        (" " * 40, [], "needs admin_api_key"),
        ("\t\n", [], "needs admin_api_key"),
        ("Zq8-short-key", [], "at least 16 characters"),
        ("   Zq8-short-key   ", [], "whitespace"),  # padding is refused, not counted as length
        ("Zq8vT1mN4pL7xR2kW9", ["acme:Zq8vT1mN4pL7xR2kW9"], "equal to admin_api_key"),
        ("Zq8vT1mN4pL7xR2kW9", ["Zq8vT1mN4pL7xR2kW9"], "equal to admin_api_key"),
    ],
)
def test_production_refuses_weak_admin_keys_without_printing_them(
    tmp_path: Path, admin: str, api_keys: list[str], says: str
) -> None:
    with pytest.raises(ValidationError, match=says) as refused:
        Settings(  # type: ignore[call-arg]
            data_dir=tmp_path, environment="production", admin_api_key=admin, api_keys=api_keys
        )
    message = str(refused.value)
    assert "input_value" not in message
    for secret in {admin.strip(), "Zq8vT1mN4pL7xR2kW9"} - {""}:
        assert secret not in message


def test_no_pickle_anywhere() -> None:
    root = ROOT
    sources = [*root.glob("rag/**/*.py"), *root.glob("services/**/*.py")]
    assert sources
    offenders = [
        str(path)
        for path in sources
        if re.search(r"^\s*(import|from)\s+(c?pickle|dill|shelve)\b", path.read_text(), re.M)
    ]
    assert offenders == []
