"""The verifier protocol and registry: a registered verifier is used by the rule with no other
change, the setting chooses the kind, and a weight file of another kind is refused at load."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from rag.errors import ConfigurationError
from rag.semantic.rule import SemanticRule
from rag.semantic.verifier import VERIFIERS, Pair, Scores, load_verifier
from rag.settings import DEFAULT_CROSS_ENCODER, DEFAULT_VERIFIER, SHIPPED_VERIFIERS, Settings


class FirstWordVerifier:
    """A stand-in: two questions agree when they start with the same word."""

    kind = "first-word"
    offload = False
    gates = (0.5,)

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def scores(self, pairs: Sequence[Pair]) -> Scores:
        self.calls.append([p.b for p in pairs])
        return np.array([p.a.split()[0] == p.b.split()[0] for p in pairs], np.float32)


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, np.float32)
    return v / np.linalg.norm(v)


def test_a_registered_verifier_is_used_by_the_rule_with_no_other_change(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stand_in = FirstWordVerifier()
    monkeypatch.setitem(VERIFIERS, "first-word", lambda path: stand_in)
    settings = Settings(
        semantic_verifier="first-word",
        semantic_verifier_path=str(tmp_path / "weights"),
        semantic_threshold=0.5,
        semantic_min_score=0.5,
    )
    rule = SemanticRule.from_settings(settings)
    assert rule.kind == "first-word" and rule.verifier is stand_in
    q = unit(1, 0, 0)
    candidates = [
        ("How do I reset my password?", unit(1, 0.1, 0)),  # the verifier agrees: hit
        ("Where do I reset my password?", unit(1, 0.1, 0)),  # it disagrees
        ("How do I not reset my password?", unit(1, 0.1, 0)),  # a guard decides first
        ("How is the weather?", unit(0, 0, 1)),  # under the gate
    ]
    decisions = rule.decide_many("How do I reset my password?", q, candidates)
    assert [d.reason for d in decisions] == ["hit", "verifier", "negation", "below-threshold"]
    assert [d.score for d in decisions] == [1.0, 0.0, None, None]
    # the pairs past the gate and the guards, all in one call
    assert stand_in.calls == [[candidates[0][0], candidates[1][0]]]


def test_the_settings_accept_only_registered_kinds() -> None:
    with pytest.raises(ValidationError, match="not a registered verifier kind"):
        Settings(semantic_verifier="first-word")
    with pytest.raises(ConfigurationError, match="unknown semantic verifier 'first-word'"):
        load_verifier("first-word", DEFAULT_VERIFIER)


def test_a_kind_without_shipped_weights_needs_a_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(VERIFIERS, "first-word", lambda path: FirstWordVerifier())
    with pytest.raises(ValidationError, match="set semantic_verifier_path"):
        Settings(semantic_verifier="first-word")


def test_the_default_settings_select_the_mlp_and_its_shipped_file() -> None:
    settings = Settings()
    assert (settings.semantic_verifier, settings.verifier_path) == ("mlp", DEFAULT_VERIFIER)
    assert SemanticRule.from_settings(settings).kind == "mlp"
    chosen = Settings(semantic_verifier="cross-encoder")
    assert chosen.verifier_path == DEFAULT_CROSS_ENCODER


@pytest.mark.parametrize("kind", list(SHIPPED_VERIFIERS))
def test_each_shipped_file_loads_as_its_kind(kind: str) -> None:
    assert load_verifier(kind, SHIPPED_VERIFIERS[kind]).kind == kind


@pytest.mark.parametrize(
    ("kind", "other_file"), [("mlp", DEFAULT_CROSS_ENCODER), ("cross-encoder", DEFAULT_VERIFIER)]
)
def test_a_file_of_another_kind_is_refused_not_swapped(kind: str, other_file: Path) -> None:
    settings = Settings(semantic_verifier=kind, semantic_verifier_path=str(other_file))
    with pytest.raises(ConfigurationError, match=f"not a weight file of the '{kind}' verifier"):
        SemanticRule.from_settings(settings)


def test_a_loader_that_makes_another_kind_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(VERIFIERS, "other", lambda path: FirstWordVerifier())
    with pytest.raises(ConfigurationError, match="made a 'first-word' verifier"):
        load_verifier("other", DEFAULT_VERIFIER)
