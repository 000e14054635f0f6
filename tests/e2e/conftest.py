"""What several end-to-end modules share: an app with three tenants (one API key each, one of
them bare) and an admin key, and a helper to ask it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from rag.embedding import SentenceTransformerEmbedder
from tests.conftest import ScriptedApp, serve_scripted

ADMIN = "admin-key-0123456789abcdef"
ACME = "acme-key-0123456789abcdef"
GLOBEX = "globex-key-0123456789abcdef"
ANON = "anonymous-key-0123456789abcdef"  # a bare key: its tenant is named after its hash


@pytest.fixture(scope="module")
def tenants(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder, valkey_url: str
) -> Iterator[ScriptedApp]:
    keys = [f"acme:{ACME}", f"globex:{GLOBEX}", ANON]
    with serve_scripted(
        tmp_path_factory,
        embedder,
        valkey_url,
        "tenants",
        api_keys=keys,
        admin_api_key=ADMIN,
        max_body_bytes=64_000,
    ) as running:
        yield running


BEARER_ADMIN = {"Authorization": f"Bearer {ADMIN}"}


def ask(running: ScriptedApp, key: str | None, query: str, **body: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(
        f"{running.url}/ask", json={"query": query, **body}, headers=headers, timeout=60
    )
