"""What the corpus version and the near cache promise clients through Redis trouble (issue 21):
no stale answer after an acknowledged document change, no LLM call for a question that was
cached before a fault, hot answers fast during the stall, and hits again as soon as Redis
returns."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from .outcomes import DocumentChange, Outcome, Run

WINDOW_S = 8.0  # how long after a fault starts its requests are counted as "during" it
LLM_CALLS = ("miss", "bypass")  # a generation: nothing was cached, or the cache was not read


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def latency(values: list[float]) -> dict[str, float | int]:
    return {
        "requests": len(values),
        "p50_ms": round(statistics.median(values), 2) if values else 0.0,
        "p99_ms": round(percentile(values, 0.99), 2),
    }


def _holds(outcome: Outcome, texts: list[str]) -> bool:
    return any(text in source for text in texts for source in outcome.sources)


def stale_answers(run: Run) -> list[Outcome]:
    """Responses to a changed document's question, sent after the change was acknowledged,
    whose sources (``/ask``'s body or the stream's ``meta`` event) hold a text the document had
    before. A request sent before the acknowledgement is concurrent with the change, so either
    text is right for it: ``changes`` counts those apart."""
    return [
        o
        for change in run.changes
        if change.acked_at_s is not None
        for o in run.outcomes
        if o.query == change.question
        and o.at_s >= change.acked_at_s
        and _holds(o, change.old_texts)
    ]


def _change(change: DocumentChange, outcomes: list[Outcome]) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "fault": change.fault,
        "doc_id": change.doc_id,
        "status": change.status,
        "posted_at_s": round(change.at_s, 2),
    }
    ack = change.acked_at_s
    if ack is None:
        return figures
    received = [
        (o.sources_at_s, o)
        for o in outcomes
        if o.query == change.question and o.sources_at_s is not None and o.sources_at_s >= ack
    ]
    old = [o for _, o in received if _holds(o, change.old_texts)]
    new = [at for at, o in received if _holds(o, [change.new_text])]
    return figures | {
        "acknowledged_after_ms": round((ack - change.at_s) * 1000, 1),
        "answers_received_after_ack": len(received),
        "old_text_sent_after_ack": sum(o.at_s >= ack for o in old),  # the stale answers
        "old_text_sent_before_ack": sum(o.at_s < ack for o in old),  # concurrent with it
        "new_text_first_received_after_s": round(min(new) - ack, 3) if new else None,
    }


def changes(run: Run) -> list[dict[str, Any]]:
    """Each document change: its POST, and what answers to its question held after it."""
    return [_change(change, run.outcomes) for change in run.changes]


def _must_change(run: Run, fault: str, before: list[Outcome]) -> set[str]:
    """Questions whose answer ``fault``'s document change makes new: that document's, and any
    other whose sources held its old text."""
    mine = [c for c in run.changes if c.fault == fault]
    return {c.question for c in mine} | {
        o.query for c in mine for o in before if _holds(o, c.old_texts)
    }


def llm_calls_for_cached(run: Run) -> dict[str, list[Outcome]]:
    """For each fault, the steady requests in its window that went to the LLM (``LLM_CALLS``)
    for a hot question already answered from the cache before the fault started."""
    hot = {o.query for o in run.warmup}
    steady = [o for o in run.outcomes if not o.role and o.query in hot]
    calls = {}
    for fault, at in run.faults.items():
        before = [o for o in steady if o.done_s < at]
        cached = {o.query for o in before if o.llm == "hit"} - _must_change(run, fault, before)
        window = [o for o in steady if at <= o.at_s < at + WINDOW_S]
        calls[fault] = [o for o in window if o.query in cached and o.llm in LLM_CALLS]
    return calls


def hot_answers_during_stall(run: Run) -> dict[str, Any]:
    """Latency of every hot-question request sent while Redis stalled, and what each got."""
    at, back = run.faults.get("stall"), run.redis_back_at_s.get("stall")
    if at is None or back is None:
        return {}
    hot = {o.query for o in run.warmup}
    during = [o for o in run.outcomes if not o.role and o.query in hot and at <= o.at_s < back]
    return {
        "stall_s": round(back - at, 2),
        **latency([o.latency_ms for o in during]),
        "llm": dict(Counter(o.llm or str(o.status) for o in during)),
    }


def redis_returns(run: Run) -> dict[str, dict[str, Any]]:
    """For each fault after which Redis answered again: when, and how long until the first
    steady request sent after that was answered from the cache."""
    steady = [o for o in run.outcomes if not o.role]
    returns = {}
    for fault, back in run.redis_back_at_s.items():
        hits = [o.done_s for o in steady if o.llm == "hit" and o.at_s >= back]
        returns[fault] = {
            "fault_at_s": round(run.faults.get(fault, back), 2),
            "back_at_s": round(back, 2),
            "hits_resumed_after_s": round(min(hits) - back, 3) if hits else None,
        }
    return returns
