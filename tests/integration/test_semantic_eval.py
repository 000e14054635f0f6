"""Regression figures of the semantic rule on the project's own evaluation set
(``tests/data/semantic_eval.jsonl``: 1,030 hand-written pairs from families the verifier never
saw in training), through ``rag semantic eval`` exactly as a user runs it.

The figures are pinned with a tolerance: a change to the rule, the guards or the shipped weights
that serves more traps or fewer paraphrases fails here and must update them on purpose."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from services.cli import main
from tests.paths import DATA

DATA = DATA
EVAL_SET = DATA / "semantic_eval.jsonl"

# (verifier, gate, min score) -> (traps served at most, paraphrases served at least), shares
PINNED = {
    "mlp": ("mlp", 0.94, 0.3, 0.2255, 0.0146),  # the shipped default: 124 of 550 traps served
    # RAG_SEMANTIC_VERIFIER=cross-encoder, calibrated on tests/data/semantic_calibration.jsonl
    # (0.8521 in float32; 0.8532 since scoring runs in bfloat16: same figures here)
    "cross-encoder": ("cross-encoder", 0.65, 0.8532, 0.2127, 0.2021),
}
TOLERANCE = 0.02


def run_eval(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    verifier: str,
    gate: float,
    min_score: float,
) -> tuple[dict[str, object], list[dict[str, object]]]:
    monkeypatch.setenv("RAG_SEMANTIC_VERIFIER", verifier)
    monkeypatch.setenv("RAG_SEMANTIC_THRESHOLD", str(gate))
    monkeypatch.setenv("RAG_SEMANTIC_MIN_SCORE", str(min_score))
    out = tmp_path / "decisions.jsonl"
    assert main(["semantic", "eval", str(EVAL_SET), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    return summary, [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("name", list(PINNED))
def test_eval_set_figures_are_pinned(
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    verifier, gate, min_score, max_traps, min_recall = PINNED[name]
    summary, decisions = run_eval(tmp_path, monkeypatch, capsys, verifier, gate, min_score)
    inputs = [json.loads(line) for line in EVAL_SET.read_text().splitlines()]
    # the output format outside checks rely on: each line echoed, hit and similarity added
    assert len(decisions) == len(inputs) == summary["pairs"]
    for line, decision in zip(inputs, decisions, strict=True):
        assert {k: decision[k] for k in line} == line
        assert isinstance(decision["hit"], bool) and isinstance(decision["similarity"], float)
    assert summary["verifier"] == verifier
    served = Counter(str(d["category"]) for d in decisions if d["hit"])
    total = Counter(str(d["category"]) for d in decisions)
    traps = sum(n for c, n in total.items() if c != "paraphrase-reword")
    trap_share = sum(n for c, n in served.items() if c != "paraphrase-reword") / traps
    recall = served["paraphrase-reword"] / total["paraphrase-reword"]
    assert trap_share <= max_traps + TOLERANCE / 2, dict(served)
    assert trap_share >= max_traps - 2 * TOLERANCE  # a big gain also updates the pin
    assert recall >= min_recall - TOLERANCE, recall
    assert abs(recall - min_recall) <= 2 * TOLERANCE  # a big gain also updates the pin
