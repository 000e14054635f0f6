"""No byte sequence gets a 500 (issue #21): hostile bodies against every POST route, and the lean
``POST /ask`` answering each exactly as the general path (``POST /ask/stream``, FastAPI's own body
handling) does: same status, same JSON, and the keep-alive connection still usable after it."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from rag.embedding import SentenceTransformerEmbedder
from tests.conftest import ScriptedApp, serve_scripted

JSON = "application/json"
NESTED = b'{"query": "x", "cache": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1001
HOSTILE: list[tuple[bytes, str | None]] = [
    (NESTED, JSON),  # 1,000 deep: a RecursionError in json.loads
    (b"[" * 5000 + b"]" * 5000, JSON),
    (b'{"query": "caf\xe9"}', JSON),  # latin-1, not UTF-8
    (b'{"query": "\xff\xfe\xfd"}', JSON),  # invalid UTF-8
    (b'\xef\xbb\xbf{"query": "x"}', JSON),  # a UTF-8 byte order mark
    ('{"query": "x"}'.encode("utf-16"), JSON),  # UTF-16 with its BOM
    (b'{"query": "x", "top_k": 1' + b"0" * 5000 + b"}", JSON),  # a huge number
    (b'{"query": "x", "top_k": 1e400}', JSON),
    (b'{"query": "x"}', "application/jsonx"),
    (b'{"query": "x"}', "application/json-patch+json"),
    (b'{"query": "x"}', "application/x-www-form-urlencoded"),
    (b'{"query": "x"}', "application/json; charset=latin-1"),
    (b'{"query": "x"}', "multipart/form-data; boundary=x"),
    (b'{"query": "x"}', ";;;"),
    (b"\x00" * 64, JSON),
    (b'"just a string"', JSON),
    (b"null", JSON),
]
IDS = [f"{i}" for i in range(len(HOSTILE))]


@pytest.fixture(scope="module")
def app(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder, valkey_url: str
) -> Iterator[ScriptedApp]:
    with serve_scripted(tmp_path_factory, embedder, valkey_url, "hostile") as running:
        yield running


def _post(client: httpx.Client, path: str, raw: bytes, content_type: str | None) -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return client.post(path, content=raw, headers=headers)


@pytest.mark.parametrize(("raw", "content_type"), HOSTILE, ids=IDS)
def test_lean_ask_answers_hostile_bytes_as_the_general_path(
    app: ScriptedApp, raw: bytes, content_type: str | None
) -> None:
    with httpx.Client(base_url=app.url, timeout=30) as client:
        lean, general = (_post(client, p, raw, content_type) for p in ("/ask", "/ask/stream"))
        if general.status_code == 200:  # the general path accepts it (e.g. a BOM it reads)
            assert lean.status_code == 200, lean.text
        else:
            assert 400 <= general.status_code < 500, general.text
            assert (lean.status_code, lean.json()) == (general.status_code, general.json())
        assert "close" not in lean.headers.get("connection", "")
        assert client.get("/healthz").status_code == 200  # the same client goes on


@pytest.mark.parametrize("path", ["/documents", "/cache/invalidate"])
@pytest.mark.parametrize(("raw", "content_type"), HOSTILE, ids=IDS)
def test_other_post_routes_refuse_hostile_bytes_with_json(
    app: ScriptedApp, path: str, raw: bytes, content_type: str | None
) -> None:
    with httpx.Client(base_url=app.url, timeout=30) as client:
        r = _post(client, path, raw, content_type)
        assert 400 <= r.status_code < 500, r.text
        assert "detail" in r.json()


@pytest.mark.parametrize(
    "query_string",
    [b"query=%ED%A0%80", b"query=x%ED%A0%80", b"query=caf%E9", b"query=%FF%FE"],
)
def test_the_get_stream_refuses_a_query_that_is_not_utf8(
    app: ScriptedApp, query_string: bytes
) -> None:
    calls = app.llm.calls
    r = httpx.get(f"{app.url}/ask/stream?{query_string.decode()}", timeout=30)
    assert r.status_code == 422, r.text
    assert "not valid UTF-8" in r.json()["detail"][0]["msg"]
    assert app.llm.calls == calls


@pytest.mark.parametrize(
    "query_string", [b"query=" + b"%5B" * 3000, b"query=x&top_k=1e400", b"query=x&top_k=%00"]
)
def test_the_get_stream_refuses_hostile_query_strings_with_json(
    app: ScriptedApp, query_string: bytes
) -> None:
    r = httpx.get(f"{app.url}/ask/stream?{query_string.decode()}", timeout=30)
    assert r.status_code < 500, r.text
    if r.status_code != 200:
        assert "detail" in r.json()


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /ask/stream?query=" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nA header with no colon\r\n\r\n",
    ],
    ids=["100k-request-line", "malformed-header"],
)
def test_a_request_the_server_cannot_parse_gets_a_json_400(
    app: ScriptedApp, request_head: bytes
) -> None:
    host, port = app.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request_head)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"content-type: application/json" in head
    assert "detail" in json.loads(body)
