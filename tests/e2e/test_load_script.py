"""scripts/load.py's verdicts (the ``scripts/faultrun`` package): a cached answer the LLM never
generated for that question, two overlapping requests of one generation with different texts, and
a slow reader whose text is not its follower's are counted as differing; a 5xx other than 503 and
a stream that ends without ``done`` or ``error`` are counted. (The run itself needs the real
stack: see README; here only its options are checked through the script.)"""

from __future__ import annotations

import subprocess
import sys

from scripts.faultrun.outcomes import Outcome, Run
from scripts.faultrun.summary import failed, summarize
from tests.paths import ROOT


def test_the_fault_run_counts_what_clients_must_never_see() -> None:
    out = Outcome
    stream = "/ask/stream"
    run = Run(
        outcomes=[
            out(0.1, "q1", 200, 900.0, llm="miss", answer="A1"),
            out(0.2, "q1", 200, 2.0, llm="hit", answer="A1"),
            out(0.3, "q2", 200, 800.0, llm="bypass", answer="A2"),
            out(0.4, "q2", 200, 2.0, llm="hit", answer="A1"),  # q1's answer served for q2
            out(0.5, "q3", 200, 2.0, llm="hit", answer="A3"),  # never generated in this run
            out(0.6, "q4", 502, 50.0, error="upstream"),
            out(0.7, "q5", 503, 3.0, error="shed", role="burst"),  # documented: not counted
            out(1.0, "q6", 200, 900.0, llm="miss", answer="B1", endpoint=stream, end="done"),
            out(1.2, "q6", 200, 800.0, llm="miss", answer="B2", endpoint=stream, end="done"),
            out(1.3, "q7", 200, 10.0, llm="miss", answer="C", endpoint=stream, end="cut"),
            out(1.4, "q8", 200, 10.0, endpoint=stream, end="error", error="504 waited"),
            out(2.0, "q9", 200, 40_000.0, "miss", "D", endpoint=stream, end="done", role="slow"),
            out(3.0, "q9", 200, 900.0, llm="miss", answer="E", role="after-slow"),
        ],
        restarted_at_s=0.25,
        back_at_s=0.35,
        faults={"restart": 0.25},
        duration_s=2.0,
        elapsed_s=5.0,
    )
    summary = summarize(run)
    assert summary["requests"] == 13
    assert summary["differing_texts"] == 4  # q2, q3, the second q6, the slow reader's follower
    assert summary["server_errors_other_than_503"] == 2  # the 502 and the 504 error event
    assert summary["streams_cut_without_error"] == 1
    assert summary["by_endpoint_and_status"]["/ask 503"] == 1
    assert summary["redis_restart"]["hits_resumed_after_s"] == 0.05  # the hit at 0.4 s, 2 ms
    assert summary["burst"]["statuses"] == {"503": 1}
    assert failed(summary)


def test_the_script_refuses_an_unknown_fault_before_starting_anything() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "load.py"), "--faults", "restart,flood"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "unknown faults ['flood']" in done.stderr
