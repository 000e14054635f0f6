"""scripts/load.py's verdicts: a cached answer that the LLM never generated for that question is
counted wrong; a non-200 is counted failed. (The script itself runs the real stack: see README.)"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.paths import ROOT


def load_script() -> ModuleType:
    path = ROOT / "scripts" / "load.py"
    spec = importlib.util.spec_from_file_location("load_script", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["load_script"] = module
    spec.loader.exec_module(module)
    return module


def test_wrong_and_failed_answers_are_counted() -> None:
    load = load_script()
    out = load.Outcome
    run = load.Run(
        outcomes=[
            out(0.1, "q1", 200, 900.0, llm="miss", answer="A1"),
            out(0.2, "q1", 200, 2.0, llm="hit", answer="A1"),
            out(0.3, "q2", 200, 800.0, llm="bypass", answer="A2"),
            out(0.4, "q2", 200, 2.0, llm="hit", answer="A1"),  # q1's answer served for q2
            out(0.5, "q3", 200, 2.0, llm="hit", answer="A3"),  # never generated in this run
            out(0.6, "q4", 502, 50.0, error="upstream"),
        ],
        restarted_at_s=0.25,
        back_at_s=0.35,
        duration_s=2.0,
        elapsed_s=5.0,
    )
    summary = load.summarize(run)
    assert summary["throughput_rps"] == 3.0
    assert summary["requests"] == 6
    assert summary["wrong_answers"] == 2
    assert summary["failed_requests"] == 1
    assert summary["redis_restart"]["requests_started_while_down"] == 1
    assert summary["by_llm_status"]["hit"]["requests"] == 3
