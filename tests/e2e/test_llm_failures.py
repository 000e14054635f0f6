"""LLM failures, with a scripted OpenAI-compatible transport (deterministic error paths), on the
real cache store, vector DB and embedder: nothing partial or failed is ever cached."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from rag.embedding import SentenceTransformerEmbedder
from rag.settings import Settings
from tests.conftest import keys_of, serve_scripted
from tests.scripted_llm import WORDS, ScriptedLLM
from tests.sse import iter_events, parse


@dataclass
class Scripted:
    url: str
    settings: Settings
    llm: ScriptedLLM

    def llm_keys(self) -> list[str]:
        return [
            k for k in keys_of(self.settings.redis_url, self.settings.namespace) if ":llm:" in k
        ]


@pytest.fixture(scope="module")
def scripted(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder, valkey_url: str
) -> Iterator[Scripted]:
    with serve_scripted(tmp_path_factory, embedder, valkey_url, "scripted") as running:
        yield Scripted(url=running.url, settings=running.settings, llm=running.llm)


def test_scripted_answer_is_cached_as_its_original_pieces(scripted: Scripted) -> None:
    events = parse(
        httpx.post(f"{scripted.url}/ask/stream", json={"query": "How long?"}, timeout=30).text
    )
    assert [d["text"] for n, d in events if n == "token"] == WORDS
    replay = parse(
        httpx.post(f"{scripted.url}/ask/stream", json={"query": "How long?"}, timeout=30).text
    )
    assert replay[0][1]["cache"]["llm"] == "hit"
    assert [d["text"] for n, d in replay if n == "token"] == WORDS


@pytest.mark.parametrize(("question", "status"), [("please fail", 502), ("please throttle", 429)])
def test_llm_error_is_a_clear_status_and_caches_nothing(
    scripted: Scripted, question: str, status: int
) -> None:
    before, keys = scripted.llm.calls, scripted.llm_keys()
    r = httpx.post(f"{scripted.url}/ask", json={"query": question}, timeout=60)
    assert r.status_code == status, r.text
    assert "LLM" in r.json()["detail"]
    assert scripted.llm.calls - before == 3  # the openai client's bounded retries: 1 + 2
    assert scripted.llm_keys() == keys
    stream = httpx.post(f"{scripted.url}/ask/stream", json={"query": question}, timeout=60)
    assert parse(stream.text)[-1] == ("error", {"status": status, "detail": r.json()["detail"]})
    assert scripted.llm_keys() == keys


def test_upstream_error_mid_stream_sends_error_event_and_caches_nothing(scripted: Scripted) -> None:
    keys = scripted.llm_keys()
    events = parse(
        httpx.post(f"{scripted.url}/ask/stream", json={"query": "break please"}, timeout=30).text
    )
    names = [n for n, _ in events]
    assert names == ["meta", "token", "token", "token", "error"]
    assert events[-1][1]["status"] == 502
    assert scripted.llm_keys() == keys
    assert (
        httpx.post(f"{scripted.url}/ask", json={"query": "break please"}, timeout=30).status_code
        == 502
    )


def test_client_disconnect_mid_stream_caches_nothing_and_stops_upstream(scripted: Scripted) -> None:
    keys = scripted.llm_keys()
    with httpx.stream(
        "POST", f"{scripted.url}/ask/stream", json={"query": "slow please"}, timeout=30
    ) as r:
        tokens = 0
        for name, _ in iter_events(r.iter_lines()):
            tokens += name == "token"
            if tokens == 2:
                break  # leaving the block closes the connection mid-answer
    time.sleep(len(WORDS) * 6 * 0.1 + 1)  # longer than the whole answer would have taken
    assert scripted.llm.words_sent[-1] < len(WORDS) * 6, "the upstream stream was not stopped"
    assert scripted.llm_keys() == keys
    # and the same question later streams in full and is cached then
    full = parse(
        httpx.post(f"{scripted.url}/ask/stream", json={"query": "slow please"}, timeout=30).text
    )
    assert sum(n == "token" for n, _ in full) == len(WORDS) * 6
    assert len(scripted.llm_keys()) == len(keys) + 1
