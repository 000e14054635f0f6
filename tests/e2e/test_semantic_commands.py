"""The shipped semantic rule on the trap set, and ``rag semantic eval | calibrate`` as a user
runs them (real MiniLM vectors; no Redis, no LLM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.embedding import SentenceTransformerEmbedder
from rag.semantic.calibration import decide_all, embed_pairs, read_pairs, summarize
from rag.semantic.rule import SemanticRule
from rag.settings import Settings
from services.cli import main
from tests.paths import ROOT

TRAPS = ROOT / "tests" / "data" / "semantic_traps.jsonl"


async def test_trap_set_stays_at_its_measured_level(embedder: SentenceTransformerEmbedder) -> None:
    pairs = await embed_pairs(read_pairs(TRAPS), embedder)
    rule = SemanticRule.from_settings(Settings())  # the live rule
    summary = summarize(rule, pairs, decide_all(rule, pairs))
    assert summary["pairs"] >= 200
    assert summary["wrong_hits"] == 0  # measured: 0 of 155 traps pass (target <= 2 %)
    assert summary["recall"] >= 0.9  # measured: 46 of 50 should-hit pairs hit (target >= 50 %)


def test_eval_command_prints_a_summary_and_echoes_decisions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "decisions.jsonl"
    assert main(["semantic", "eval", str(TRAPS), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"pairs", "hits", "precision", "recall", "threshold", "min_score", "rejected_by"} <= set(
        summary
    )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    originals = read_pairs(TRAPS)
    assert len(lines) == len(originals) == summary["pairs"]
    assert all(
        {**o, "hit": line["hit"], "similarity": line["similarity"]} == line
        for o, line in zip(originals, lines, strict=True)
    )
    assert sum(line["hit"] for line in lines) == summary["hits"]


def test_calibrate_command_writes_verifier_curve_and_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The trap set four times over: enough pairs that the 20 % held out has some of each kind,
    # and no dependence on data outside the repository. This checks the command, not the model.
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(TRAPS.read_text() * 4)
    assert (
        main(
            [
                "semantic",
                "calibrate",
                str(pairs),
                "--target-precision",
                "0.8",
                "--out-dir",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "threshold  min_score  precision   recall" in printed and "chosen: threshold" in printed
    assert (tmp_path / "out" / "semantic_verifier.npz").stat().st_size > 0
    assert (tmp_path / "out" / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_pairs_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": "x", "b": "y", "label": 1}\n{"a": "x"}\n')
    assert main(["semantic", "eval", str(bad)]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
