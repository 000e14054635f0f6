"""Unit tests of the semantic cache's pure parts: guards and the in-process index."""

from __future__ import annotations

import time

import numpy as np
import pytest

from rag.semantic.guards import facts, trap
from rag.semantic.index import IndexEntry, SemanticIndex
from rag.semantic.rule import SemanticRule


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


# -- the rule and the false-hit budget ---------------------------------------------------------


def test_clopper_pearson_upper_bound_matches_the_beta_quantile() -> None:
    from rag.semantic.outcomes import clopper_pearson_upper

    # scipy.stats.beta.ppf(0.95, k + 1, n - k) for these (k, n)
    assert clopper_pearson_upper(0, 300) == pytest.approx(0.0099361, abs=1e-6)
    assert clopper_pearson_upper(3, 500) == pytest.approx(0.0154337, abs=1e-6)
    assert clopper_pearson_upper(10, 1000) == pytest.approx(0.0169032, abs=1e-6)
    assert clopper_pearson_upper(5, 5) == 1.0 and clopper_pearson_upper(0, 0) == 1.0
    bounds = [clopper_pearson_upper(k, 400) for k in range(10)]
    assert bounds == sorted(bounds) and all(b > k / 400 for k, b in enumerate(bounds))


def test_budget_picks_the_most_recall_whose_bound_fits() -> None:
    from rag.semantic.calibration import budget_points

    rng = np.random.default_rng(0)
    labels = np.array([1] * 300 + [0] * 700)
    score = np.where(labels == 1, rng.uniform(0.3, 1.0, 1000), rng.uniform(0.0, 0.6, 1000))
    similarity = np.full(1000, 0.9)
    best, table = budget_points(
        similarity, score, labels, max_false_hit_rate=0.02, thresholds=[0.8, 0.95]
    )
    assert best is not None and best.threshold == 0.8
    assert table[1].threshold == 0.95 and table[1].recall == 0.0  # the gate lets nothing in
    assert best.upper_bound <= 0.02 and best.false_hits < 0.02 * 700
    served = (score >= best.min_score) & (labels == 0)
    assert served.sum() == best.false_hits
    # one step lower would break the bound: the chosen point is the most recall that fits
    lower = np.sort(np.unique(np.round(score, 4)))
    below = lower[lower < best.min_score][-1]
    from rag.semantic.outcomes import clopper_pearson_upper

    k = int(((score >= below) & (labels == 0)).sum())
    assert clopper_pearson_upper(k, 700) > 0.02


def mlp_rule(threshold: float, min_score: float) -> SemanticRule:
    from rag.semantic.mlp import MLPVerifier

    dim = 2 * 8 + 1 + 5
    w1 = np.zeros((dim, 1), np.float32)
    w1[2 * 8, 0] = 1.0  # the score follows the cosine feature
    verifier = MLPVerifier(
        mean=np.zeros(dim, np.float32),
        scale=np.ones(dim, np.float32),
        w1=w1,
        b1=np.zeros(1, np.float32),
        w2=np.array([10.0], np.float32),
        b2=-9.0,
    )
    return SemanticRule(threshold=threshold, min_score=min_score, verifier=verifier)


def test_rule_gate_guards_and_verifier_decide_in_one_batch_or_one_by_one() -> None:
    rule = mlp_rule(threshold=0.5, min_score=0.5)
    q = unit(0)
    near = q + 0.05 * unit(1)
    near /= np.linalg.norm(near)
    candidates = [
        ("How do I reset my password?", near),  # close, no trap: hit
        ("How do I not reset my password?", near),  # a guard fires
        ("Something else entirely", unit(2)),  # under the gate
    ]
    many = rule.decide_many("How do I reset my password?", q, candidates)
    assert [d.reason for d in many] == ["hit", "negation", "below-threshold"]
    assert many[0].score is not None and many[0].score > 0.5
    one_by_one = [rule.decide("How do I reset my password?", q, c, v) for c, v in candidates]
    assert one_by_one == many
    assert rule.kind == "mlp"
    # a stricter verifier turns the same pair down, and says so
    assert (
        rule.__class__(threshold=0.5, min_score=0.999, verifier=rule.verifier)
        .decide("How do I reset my password?", q, *candidates[0])
        .reason
        == "verifier"
    )
