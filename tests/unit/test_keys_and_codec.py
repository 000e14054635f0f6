"""Unit tests: what goes into each key, and how entries encode."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from rag.cache.aside import Background, CachedLayer
from rag.cache.codec import (
    CorruptEntryError,
    decode_json,
    decode_vector,
    encode_json,
    encode_vector,
)
from rag.cache.keys import build_key, normalize_text
from rag.cache.layers import AnswerLayer, EmbeddingLayer, SearchLayer
from rag.cache.layers.base import Freshness
from rag.metrics import Metrics
from rag.types import Chunk, Completion, ScoredChunk, Usage


class RecordingStore:
    """Remembers writes; enough for the stages, which only ever ``set`` through the store."""

    available = True

    def __init__(self) -> None:
        self.writes: dict[str, tuple[bytes, int]] = {}

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        return [self.writes[k][0] if k in self.writes else None for k in keys]

    async def set(self, key: str, value: bytes, ttl_s: int) -> bool:
        self.writes[key] = (value, ttl_s)
        return True

    async def set_if_absent(self, key: str, value: bytes, ttl_s: int) -> bytes | None:
        self.writes.setdefault(key, (value, ttl_s))
        return self.writes[key][0]

    async def delete(self, *keys: str) -> int:
        return sum(self.writes.pop(k, None) is not None for k in keys)


def hit(
    chunk_id: str = "doc#0", text: str = "Redis caches answers.", score: float = 0.8
) -> ScoredChunk:
    return ScoredChunk(
        chunk=Chunk(
            doc_id="doc", chunk_id=chunk_id, text=text, source="doc.md", content_hash=f"h-{text}"
        ),
        score=score,
    )


def emb_cache(model: str = "all-MiniLM-L6-v2") -> EmbeddingLayer:
    return EmbeddingLayer(namespace="ns", model_id=model, dimension=4, ttl_s=604800)


def search_cache(model: str = "all-MiniLM-L6-v2") -> SearchLayer:
    return SearchLayer(
        namespace="ns",
        embedding_model_id=model,
        collection="docs",
        ttl_s=3600,
        freshness=Freshness(3600),
    )


def answer_cache(
    model: str = "smol", prompt: str = "v1-abc", temperature: float = 0.0
) -> AnswerLayer:
    return AnswerLayer(
        namespace="ns",
        llm_model=model,
        prompt_version=prompt,
        sampling={"max_tokens": 64, "temperature": temperature},
        ttl_s=3600,
        freshness=Freshness(3600),
    )


def test_key_shape_names_namespace_layer_and_model() -> None:
    key = emb_cache().key("What is Redis?")
    assert key.startswith("rag:ns:emb:all-MiniLM-L6-v2:")
    assert len(key.rsplit(":", 1)[1]) == 64  # sha256 hex


def test_model_ids_cannot_break_the_key_layout() -> None:
    assert build_key("ns", "llm", "org/model:v2 {x}", sha="0" * 64).count(":") == 4


def test_normalization_collapses_whitespace_but_keeps_case() -> None:
    assert normalize_text("  What\tis \n Redis? ") == "What is Redis?"
    assert normalize_text("Redis") != normalize_text("redis")


def test_embedding_key_follows_model_and_text() -> None:
    assert emb_cache().key("a  b") == emb_cache().key("a b")
    assert emb_cache().key("a") != emb_cache().key("b")
    assert emb_cache().key("a") != emb_cache(model="bge-small").key("a")


def test_search_key_follows_embedding_model_corpus_version_and_k() -> None:
    base = search_cache().key("q", corpus_version="v1", k=4)
    assert base == search_cache().key("q", corpus_version="v1", k=4)
    assert base != search_cache().key("q", corpus_version="v2", k=4)
    assert base != search_cache().key("q", corpus_version="v1", k=5)
    assert base != search_cache(model="bge-small").key("q", corpus_version="v1", k=4)
    assert ":v1:" in base and ":k4:" in base


def test_answer_key_follows_llm_model_prompt_sampling_and_chunks() -> None:
    chunks = [hit()]
    base = answer_cache().key("q", chunks)
    assert base == answer_cache().key("q", chunks)
    assert base != answer_cache(model="gpt-4o-mini").key("q", chunks)
    assert base != answer_cache(prompt="v2-abc").key("q", chunks)
    assert base != answer_cache(temperature=0.7).key("q", chunks)
    assert base != answer_cache().key("q", [hit(text="Redis caches vectors.")])  # content changed
    assert base != answer_cache().key("q", [hit(chunk_id="doc#1")])
    assert base.startswith("rag:ns:llm:smol:v1-abc:")


def test_vector_round_trip_is_exact_and_compact() -> None:
    vector = np.array([0.5, -0.25, 0.125, 1.0], dtype=np.float32)
    raw = encode_vector(vector)
    assert len(raw) == 3 + 4 * 4
    assert np.array_equal(decode_vector(raw, 4), vector)


@pytest.mark.parametrize(
    "raw",
    [b"", b"garbage", encode_vector(np.zeros(3, dtype=np.float32)), b"\x02\x04\x00" + b"\x00" * 16],
)
def test_bad_vector_entries_are_rejected(raw: bytes) -> None:
    with pytest.raises(CorruptEntryError):
        decode_vector(raw, 4)


@pytest.mark.parametrize(
    "raw", [b"\xff\xfe", b"[]", b'{"schema": 99, "kind": "llm"}', encode_json("search", {})]
)
def test_bad_json_entries_are_rejected(raw: bytes) -> None:
    with pytest.raises(CorruptEntryError):
        decode_json(raw, "llm")


def stage(codec: Any, store: RecordingStore) -> CachedLayer[Any, Any]:
    """The layer's codec behind the stage that reads and writes it, as the app builds it."""
    return CachedLayer(spec=codec, store=store, metrics=Metrics(), background=Background())


async def test_every_layer_writes_with_its_configured_ttl_and_round_trips() -> None:
    store = RecordingStore()
    emb, search, answers = emb_cache(), search_cache(), answer_cache()
    vector = np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32)
    await stage(emb, store).write(emb.key("q"), vector)
    search_key = search.key("q", corpus_version="v1", k=1)
    await stage(search, store).write(search_key, [hit()])
    completion = Completion(
        text="Redis caches answers.",
        pieces=("Redis", " caches", " answers."),
        usage=Usage(prompt_tokens=10, completion_tokens=3),
        finish_reason="stop",
        model="smol",
    )
    answer_key = answers.key("q", [hit()])
    await stage(answers, store).write(answer_key, completion)

    assert {k: ttl for k, (_, ttl) in store.writes.items()} == {
        emb.key("q"): 604800,
        search_key: 3600,
        answer_key: 3600,
    }
    assert np.array_equal(emb.decode(store.writes[emb.key("q")][0]).value, vector)
    assert search.decode(store.writes[search_key][0]).value == [hit()]
    assert answers.decode(store.writes[answer_key][0]).value == completion
    # and the stage reads back what it wrote
    found = await stage(answers, store).read(answer_key)
    assert found is not None and found.value == completion


async def test_a_corrupt_entry_is_a_miss_and_is_deleted() -> None:
    store = RecordingStore()
    answers = stage(answer_cache(), store)
    store.writes["k"] = (b"\xff\xfe", 60)
    assert await answers.read("k") is None
    assert "k" not in store.writes


async def test_entries_turn_stale_after_their_soft_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    store = RecordingStore()
    answers = AnswerLayer(
        namespace="ns",
        llm_model="m",
        prompt_version="p",
        sampling={},
        ttl_s=3600,
        freshness=Freshness(60),
    )
    completion = Completion("a", ("a",), Usage(), "stop", "m")
    await stage(answers, store).write("k", completion, compute_s=2.0)
    raw, ttl = store.writes["k"]
    assert ttl == 3600  # the hard TTL is what Redis enforces
    assert not answers.decode(raw).stale
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 61)
    assert answers.decode(raw).stale


async def test_xfetch_refreshes_some_entries_early_and_never_too_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = RecordingStore()
    search = SearchLayer(
        namespace="ns",
        embedding_model_id="m",
        collection="c",
        ttl_s=3600,
        freshness=Freshness(100, xfetch_beta=1.0),
    )
    await stage(search, store).write("k", [hit()], compute_s=5.0)
    raw = store.writes["k"][0]
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 95)  # 5 s before the soft TTL
    early = sum(search.decode(raw).stale for _ in range(2000))
    assert 0.3 * 2000 < early < 0.5 * 2000  # P = exp(-1) ~ 0.37 with compute 5 s, 5 s left
    monkeypatch.setattr(time, "time", lambda: now + 10)  # far from it: practically never
    assert sum(search.decode(raw).stale for _ in range(2000)) == 0
