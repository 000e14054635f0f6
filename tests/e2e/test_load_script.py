"""scripts/load.py's verdicts (the ``scripts/faultrun`` package): a cached answer the LLM never
generated for that question, two overlapping requests of one generation with different texts, and
a slow reader whose text is not its follower's are counted as differing; a 5xx other than 503 and
a stream that ends without ``done`` or ``error`` are counted; an answer sent after a document
change was acknowledged whose sources hold the document's old text is stale; a hot question that
was a hit before a fault and goes to the LLM in the fault's window is an LLM call counted against
that fault. (The run itself needs the real stack: see README; here only its options are checked
through the script.)"""

from __future__ import annotations

import subprocess
import sys

from scripts.faultrun.outcomes import DocumentChange, Outcome, Run
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
        redis_back_at_s={"restart": 0.35},
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
    assert summary["redis_returns"]["restart"]["hits_resumed_after_s"] == 0.052  # 0.4 s + 2 ms
    assert summary["burst"]["statuses"] == {"503": 1}
    assert failed(summary)


OLD = "The office door is painted bright red."
NEW = "The office door is painted deep green."
DOOR = "What colour is the office door painted?"


def _door_change(acked_at_s: float | None = 10.2) -> DocumentChange:
    return DocumentChange(
        fault="replace-refused",
        doc_id="fault-door",
        question=DOOR,
        old_texts=[OLD],
        new_text=NEW,
        at_s=10.0,
        status=201 if acked_at_s is not None else 0,
        acked_at_s=acked_at_s,
        corpus_version="v2" if acked_at_s is not None else "",
    )


def _door(at_s: float, text: str, llm: str = "hit", stream: bool = False) -> Outcome:
    """A response to the door question, its sources arriving 5 ms after it was sent."""
    return Outcome(
        at_s,
        DOOR,
        200,
        5.0,
        llm=llm,
        answer=f"It is {text.split()[-2]}.",
        endpoint="/ask/stream" if stream else "/ask",
        end="done" if stream else "",
        sources=[text, "Cache keys hash the query."],
        sources_at_s=at_s + 0.005,
    )


def test_an_answer_with_the_old_text_sent_after_the_acknowledged_change_is_stale() -> None:
    run = Run(
        warmup=[_door(-1.0, OLD, llm="miss")],
        outcomes=[
            _door(9.0, OLD),  # before the change: right
            _door(10.199, OLD),  # sent before the 201, received after: concurrent, not stale
            _door(10.3, NEW, llm="miss"),
            _door(10.4, NEW, stream=True),
            _door(10.5, OLD),  # the old text by /ask after the 201: stale
            _door(11.0, OLD, stream=True),  # and in a stream's meta event: stale
        ],
        faults={"replace-refused": 10.0},
        changes=[_door_change()],
        duration_s=12.0,
    )
    summary = summarize(run)
    assert summary["stale_answers_after_change"] == 2
    (change,) = summary["document_changes"]
    assert change["old_text_sent_after_ack"] == 2
    assert change["old_text_sent_before_ack"] == 1
    assert change["new_text_first_received_after_s"] == 0.105
    assert summary["differing_texts"] == 0
    assert summary["server_errors_other_than_503"] == summary["streams_cut_without_error"] == 0
    assert failed(summary)
    run.outcomes = [o for o in run.outcomes if o.at_s < 10.5]
    assert not failed(summarize(run))


def test_a_change_that_is_not_acknowledged_fails_the_run() -> None:
    run = Run(outcomes=[_door(9.0, OLD)], changes=[_door_change(acked_at_s=None)])
    summary = summarize(run)
    assert summary["stale_answers_after_change"] == 0  # nothing was acknowledged
    assert summary["document_changes_not_acknowledged"] == 1
    assert failed(summary)


def test_an_llm_call_for_a_hot_question_cached_before_a_fault_is_counted() -> None:
    out = Outcome
    hot, other, new = "How are cache keys built?", "Why are errors never cached?", "Question 1"
    run = Run(
        warmup=[out(-2.0, hot, 200, 900.0, llm="miss"), out(-1.0, other, 200, 900.0, "miss")],
        outcomes=[
            out(1.0, hot, 200, 2.0, llm="hit"),  # cached before the stall
            out(5.0, hot, 200, 3000.0, llm="miss"),  # in the stall's window: counted
            out(5.5, hot, 200, 900.0, llm="bypass"),  # a generation too: counted
            out(6.0, other, 200, 900.0, llm="miss"),  # never a hit before: not counted
            out(6.5, new, 200, 900.0, llm="miss"),  # not a hot question: not counted
            out(5.0, hot, 503, 3.0, role="burst"),  # not a steady client: not counted
            out(20.0, hot, 200, 900.0, llm="miss"),  # after the window: not counted
        ],
        faults={"stall": 4.0},
        redis_back_at_s={"stall": 7.0},
        duration_s=30.0,
    )
    summary = summarize(run)
    assert summary["llm_calls_for_questions_cached_before"] == {"stall": 2}
    assert summary["hot_answers_during_stall"]["requests"] == 3
    assert summary["hot_answers_during_stall"]["llm"] == {"miss": 2, "bypass": 1}
    assert summary["redis_returns"]["stall"]["hits_resumed_after_s"] is None  # no hit after 7 s


def test_the_changed_question_may_go_to_the_llm_in_its_own_fault() -> None:
    run = Run(
        warmup=[_door(-1.0, OLD, llm="miss")],
        outcomes=[_door(9.0, OLD), _door(10.3, NEW, llm="miss"), _door(10.4, NEW)],
        faults={"replace-refused": 10.0},
        changes=[_door_change()],
        duration_s=12.0,
    )
    assert summarize(run)["llm_calls_for_questions_cached_before"] == {"replace-refused": 0}
    run.faults["stall"] = 10.0  # the same miss in another fault's window is counted there
    assert summarize(run)["llm_calls_for_questions_cached_before"]["stall"] == 1


def test_the_script_refuses_an_unknown_fault_before_starting_anything() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "load.py"), "--faults", "restart,flood"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "unknown faults ['flood']" in done.stderr
