"""Unit tests of the semantic cache's pure parts: guards and the in-process index."""

from __future__ import annotations

import time

import numpy as np
import pytest

from rag.semantic.guards import facts, trap
from rag.semantic.index import IndexEntry, SemanticIndex


@pytest.mark.parametrize(
    ("a", "b", "kind"),
    [
        ("Is coffee healthy?", "Is coffee not healthy?", "negation"),
        ("Why does it work?", "Why doesn't it work?", "negation"),
        ("How many eggs for 2 people?", "How many eggs for two people?", None),  # same number
        ("How many eggs for 2 people?", "How many eggs for 3 people?", "number"),
        ("What happened in 1969?", "What happened in 1970?", "number"),
        ("What to do in January?", "What to do in July?", "number"),
        ("When does the store open?", "When does the store close?", "antonym"),
        ("What is the capital of France?", "What is the capital of Germany?", "entity"),
        ("How do I learn Python?", "How do I learn python", None),  # case is not an entity change
        ("Flights from Paris to London", "Flights from London to Paris", "entity-order"),
        ("Is iOS better than Android?", "Is Android better than iOS?", "entity-order"),
        ("Are men taller than women?", "Are women taller than men?", "swap"),
        ("How do I learn Python?", "How do I learn Python for data science?", "scope"),
        ("What is the best way to learn guitar?", "How do I learn guitar?", None),  # filler only
        ("How do I reset my password?", "How can I reset my password?", None),
    ],
)
def test_traps_are_named_and_paraphrases_pass(a: str, b: str, kind: str | None) -> None:
    assert trap(facts(a), facts(b)) == kind
    assert trap(facts(b), facts(a)) == kind  # symmetric


def unit(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def entry(key: str, scope: str = "s1", ttl: float = 60) -> IndexEntry:
    return IndexEntry(
        key=key, scope=scope, query=key, answer_key=f"ans:{key}", expires_at=time.time() + ttl
    )


def test_index_finds_near_vectors_best_first_within_scope() -> None:
    index = SemanticIndex(dimension=8, max_entries=100)
    for i in range(50):
        index.add(entry(f"k{i}"), unit(i))
    index.add(entry("other-scope", scope="s2"), unit(7))
    found = index.candidates("s1", unit(7), threshold=0.99)
    assert [(e.key, round(s, 4)) for e, s in found] == [("k7", 1.0)]
    assert [e.key for e, _ in index.candidates("s2", unit(7), 0.99)] == ["other-scope"]
    assert index.candidates("s3", unit(7), 0.0) == []
    ranked = [s for _, s in index.candidates("s1", unit(7), threshold=-1.0, limit=5)]
    assert len(ranked) == 5 and ranked == sorted(ranked, reverse=True)


def test_index_removes_and_reuses_rows() -> None:
    index = SemanticIndex(dimension=8, max_entries=1000)
    for i in range(200):  # grows past the initial capacity
        index.add(entry(f"k{i}"), unit(i))
    index.remove("k3")
    assert index.candidates("s1", unit(3), 0.99) == []
    index.add(entry("k3-again"), unit(3))
    assert [e.key for e, _ in index.candidates("s1", unit(3), 0.99)] == ["k3-again"]
    assert len(index) == 200


def test_cap_evicts_oldest_first() -> None:
    index = SemanticIndex(dimension=8, max_entries=3)
    for i in range(5):
        index.add(entry(f"k{i}"), unit(i))
    assert len(index) == 3 and index.evictions == 2
    assert index.candidates("s1", unit(0), 0.99) == []
    assert [e.key for e, _ in index.candidates("s1", unit(4), 0.99)] == ["k4"]


def test_expired_entries_disappear() -> None:
    index = SemanticIndex(dimension=8, max_entries=10)
    index.add(entry("old", ttl=-1), unit(1))
    index.add(entry("live"), unit(2))
    assert index.candidates("s1", unit(1), 0.99) == []
    assert len(index) == 1
    index.add(entry("old2", ttl=-1), unit(3))
    assert index.drop_expired() == 1 and len(index) == 1


def test_pruned_search_finds_exactly_what_a_full_scan_finds() -> None:
    rng = np.random.default_rng(1)
    # anisotropic like real embeddings: a few strong directions plus noise
    base = rng.standard_normal((40, 64)).astype(np.float32)
    vectors = (
        rng.standard_normal((5000, 40)).astype(np.float32) @ base
    ) + 0.3 * rng.standard_normal((5000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = SemanticIndex(dimension=64, max_entries=10_000)
    for i, v in enumerate(vectors):
        index.add(entry(f"k{i}"), v)
    index.remove("k10")
    assert index._scopes["s1"].basis is not None  # large enough to prune
    for q_i in range(0, 200, 7):
        query = vectors[q_i] + 0.2 * rng.standard_normal(64).astype(np.float32)
        query /= np.linalg.norm(query)
        for threshold in (0.5, 0.8, 0.95):
            scores = vectors @ query
            scores[10] = -1  # removed
            expected = {f"k{i}" for i in np.flatnonzero(scores >= threshold)}
            found = index.candidates("s1", query, threshold, limit=10_000)
            assert {e.key for e, _ in found} == expected
