"""Bad input on the tenants' app: request bodies are bounded (413 before they are read), every
invalid body or query is a JSON 4xx saying what is wrong, numbers and flags are strict, and a
query with nothing visible is refused before any LLM call. The LLM transport is scripted; cache
store, vector DB and embedder are real."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ScriptedApp
from tests.e2e.conftest import ACME, BEARER_ADMIN


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
        ({"query": "x" * 2001}, 422, "longer than 2000"),
        ({"query": "What is Redis?", "top_k": 0}, 422, "top_k"),
        ({"query": "What is Redis?", "top_k": 21}, 422, "top_k"),
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


ACME_JSON = {"Authorization": f"Bearer {ACME}", "content-type": "application/json"}
ADMIN_JSON = {**BEARER_ADMIN, "content-type": "application/json"}


@pytest.mark.parametrize(
    ("path", "raw", "says"),
    [
        # valid JSON that Python reads, but that strict JSON cannot echo back
        ("/ask", r'{"query": "\ud800"}', "lone surrogate (\\ud800"),
        ("/ask", r'{"query": "What is Redis?\udc00"}', "lone surrogate"),
        ("/ask", '{"query": "x", "cache": {"threshold": NaN}}', "finite"),
        ("/ask", '{"query": "x", "cache": {"threshold": -Infinity}}', "finite"),
        ("/ask", '{"query": "x", "top_k": 1e400}', "integer"),
        ("/ask", '{"query": "x", "top_k": NaN}', "integer"),
        ("/ask", '{"query": "x", "unknown": NaN}', "unknown"),
        ("/ask", "NaN", "dictionary"),
        ("/ask", r'{"query": "x", "session_id": "\ud800"}', "session_id"),
        ("/ask", '{"query": "x", "session_id": Infinity}', "session_id"),
        ("/ask/stream", r'{"query": "\ud800"}', "lone surrogate"),
        ("/ask/stream", '{"query": "x", "cache": {"threshold": NaN}}', "finite"),
        ("/documents", r'{"doc_id": "\ud800", "text": "x"}', "lone surrogate"),
        ("/documents", r'{"doc_id": "d", "text": "a\udfffb"}', "lone surrogate"),
        ("/documents", '{"doc_id": NaN, "text": "x"}', "doc_id"),
        ("/cache/invalidate", r'{"layer": "\ud800"}', "layer must be one of"),
        ("/cache/invalidate", r'{"tag": "doc:\ud800"}', "lone surrogate"),
        ("/cache/invalidate", '{"all": NaN}', "boolean"),
    ],
)
def test_input_json_cannot_echo_gets_a_json_422(
    tenants: ScriptedApp, path: str, raw: str, says: str
) -> None:
    calls = tenants.llm.calls
    headers = ADMIN_JSON if path in ("/documents", "/cache/invalidate") else ACME_JSON
    r = httpx.post(f"{tenants.url}{path}", content=raw.encode(), headers=headers, timeout=30)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/json"
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail
    said = " ".join(f"{e['msg']} {' '.join(map(str, e['loc']))}" for e in detail)
    assert says in said, said
    assert tenants.llm.calls == calls


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/cache/invalidate", {"all": "yes"}, "all"),
        ("/cache/invalidate", {"all": 1}, "all"),
        ("/cache/invalidate", {"layer": "everything"}, "layer"),
        ("/ask", {"query": "What is Redis?", "top_k": "4"}, "top_k"),
        ("/ask", {"query": "What is Redis?", "top_k": True}, "top_k"),
        ("/ask", {"query": "What is Redis?", "top_k": 4.0}, "top_k"),
        ("/ask", {"query": "What is Redis?", "cache": {"semantic": "yes"}}, "semantic"),
        ("/ask", {"query": "What is Redis?", "cache": {"threshold": "0.9"}}, "threshold"),
    ],
)
def test_numbers_and_flags_are_strict(
    tenants: ScriptedApp, path: str, body: dict[str, object], field: str
) -> None:
    headers = BEARER_ADMIN if path == "/cache/invalidate" else {"Authorization": f"Bearer {ACME}"}
    r = httpx.post(f"{tenants.url}{path}", json=body, headers=headers, timeout=30)
    assert r.status_code == 422, r.text
    assert field in {str(part) for error in r.json()["detail"] for part in error["loc"]}


def test_the_layers_of_invalidation_come_from_the_registry(tenants: ScriptedApp) -> None:
    from rag.cache.layers import INVALIDATION_TARGETS

    schema = httpx.get(f"{tenants.url}/openapi.json").json()["components"]["schemas"]
    layer = schema["CacheInvalidate"]["properties"]["layer"]["anyOf"][0]
    assert layer["enum"] == list(INVALIDATION_TARGETS)
    for name in INVALIDATION_TARGETS:
        r = httpx.post(
            f"{tenants.url}/cache/invalidate", json={"layer": name}, headers=BEARER_ADMIN
        )
        assert r.status_code == 200, (name, r.text)


@pytest.mark.parametrize(
    "query",
    [
        *["\u200b", "\ufeff", "\u2060", " \u200b\t\u200d\n", "\u3164"],
        *["\ufe0f\ufe0e", "\u2800\u2800", "\ufffd", "\u200d\ufe0f", "\u0301"],  # issue #21
    ],
)
def test_invisible_queries_are_refused_before_any_llm_call(
    tenants: ScriptedApp, query: str
) -> None:
    calls = tenants.llm.calls
    acme = {"Authorization": f"Bearer {ACME}"}
    for r in (
        httpx.post(f"{tenants.url}/ask", json={"query": query}, headers=acme),
        httpx.post(f"{tenants.url}/ask/stream", json={"query": query}, headers=acme),
        httpx.get(f"{tenants.url}/ask/stream", params={"query": query}, headers=acme),
    ):
        assert r.status_code == 400, r.text
        assert "visible character" in r.json()["detail"]
    assert tenants.llm.calls == calls


def test_stream_query_parameters_are_validated_like_the_body(tenants: ScriptedApp) -> None:
    acme = {"Authorization": f"Bearer {ACME}"}
    url = f"{tenants.url}/ask/stream"
    for params in ({"query": "x", "threshold": "nan"}, {"query": "x", "top_k": "0"}):
        r = httpx.get(url, params=params, headers=acme)
        assert r.status_code == 422, r.text
    ok = httpx.get(url, params={"query": "What is Redis?", "top_k": "2"}, headers=acme)
    assert ok.status_code == 200 and "event: done" in ok.text
