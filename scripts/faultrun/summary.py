"""The run's figures and verdict: counts by endpoint and status, what clients must never see
(5xx other than 503, no response, cut streams, differing texts, stale answers after a document
change), the document changes, LLM calls for questions cached before each fault, hot-answer
latency during the stall, hit-resume time after each Redis return, and latency percentiles in
each fault's window (``verdicts`` has the issue-21 figures)."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from typing import Any

from . import verdicts
from .outcomes import Outcome, Run
from .verdicts import WINDOW_S, latency


def _answered(run: Run) -> list[Outcome]:
    """Every complete 200, the warm-up included."""
    everything = [*run.warmup, *run.outcomes]
    return [o for o in everything if o.status == 200 and o.end not in ("cut", "error", "left")]


def _generated_from(o: Outcome) -> tuple[str, tuple[str, ...]]:
    """What an answer is generated from: its question and its sources (a document change makes
    a new answer of one question right)."""
    return o.query, tuple(o.sources)


def _hits_never_generated(answered: list[Outcome]) -> list[Outcome]:
    """Cached answers that are not one generated for their question and sources in the run."""
    generated: dict[tuple[str, tuple[str, ...]], set[str]] = defaultdict(set)
    for o in answered:
        if o.llm != "hit":
            generated[_generated_from(o)].add(o.answer)
    return [o for o in answered if o.llm == "hit" and o.answer not in generated[_generated_from(o)]]


def _overlapping_misses_that_differ(answered: list[Outcome]) -> list[Outcome]:
    """Misses of one question and sources that overlapped in time (one generation, so one text)
    and whose texts differ: the later of each such pair."""
    by_question: dict[tuple[str, tuple[str, ...]], list[Outcome]] = defaultdict(list)
    for o in answered:
        if o.llm == "miss":
            by_question[_generated_from(o)].append(o)
    wrong = []
    for same in by_question.values():
        same.sort(key=lambda o: o.at_s)
        wrong += [
            b for a, b in itertools.pairwise(same) if b.at_s < a.done_s and a.answer != b.answer
        ]
    return wrong


def _followers_unlike_their_slow_reader(answered: list[Outcome]) -> list[Outcome]:
    slow = {o.query: o for o in answered if o.role == "slow"}
    return [
        o
        for o in answered
        if o.role == "after-slow" and o.query in slow and o.answer != slow[o.query].answer
    ]


def differing_texts(run: Run) -> list[Outcome]:
    """Answers that differ from the one they should equal (see the package's docstring)."""
    answered = _answered(run)
    wrong = _hits_never_generated(answered)
    wrong += _overlapping_misses_that_differ(answered)
    wrong += _followers_unlike_their_slow_reader(answered)
    return list({id(o): o for o in wrong}.values())


def _never_seen(run: Run) -> dict[str, list[Outcome]]:
    """What clients must never see, by kind; ``differing_texts`` included."""
    outcomes = run.outcomes
    server_errors = [o for o in outcomes if o.status >= 500 and o.status != 503]
    server_errors += [o for o in outcomes if o.end == "error" and not o.error.startswith("503")]
    return {
        "server_errors_other_than_503": server_errors,
        "no_response": [o for o in outcomes if o.status == 0 and o.end != "left"],
        "streams_cut_without_error": [o for o in outcomes if o.end == "cut"],
        "differing_texts": differing_texts(run),
        "stale_answers_after_change": verdicts.stale_answers(run),
    }


def _by_llm_status(steady: list[Outcome]) -> dict[str, dict[str, float | int]]:
    return {
        name: latency([o.latency_ms for o in steady if (o.llm or "failed") == name])
        for name in sorted({o.llm or "failed" for o in steady})
    }


def _latency_during_faults(run: Run, steady: list[Outcome]) -> dict[str, Any]:
    """Latency by LLM status of the steady requests started in each fault's window, and in a
    quiet window before the first fault."""
    quiet_until = min(run.faults.values(), default=run.duration_s)
    windows = {"none (before the first fault)": (0.0, max(0.0, quiet_until - 1.0))}
    windows |= {name: (at, at + WINDOW_S) for name, at in run.faults.items()}
    return {
        name: {
            status: latency([o.latency_ms for o in steady if lo <= o.at_s < hi and o.llm == status])
            for status in ("hit", "bypass", "miss")
        }
        for name, (lo, hi) in windows.items()
    }


def _burst(outcomes: list[Outcome]) -> dict[str, Any]:
    burst = [o for o in outcomes if o.role == "burst"]
    return {
        "statuses": dict(Counter(str(o.status) for o in burst)),
        "503_latency": latency([o.latency_ms for o in burst if o.status == 503]),
    }


def _slow_readers(outcomes: list[Outcome]) -> dict[str, Any]:
    return {
        "ends": dict(Counter(o.end or str(o.status) for o in outcomes if o.role == "slow")),
        "their_ask_followers": latency([o.latency_ms for o in outcomes if o.role == "after-slow"]),
    }


def summarize(run: Run) -> dict[str, Any]:
    """The run's figures, as printed and written by ``--json``."""
    outcomes = run.outcomes
    by_status = Counter(f"{o.endpoint} {o.status or 'no response'}" for o in outcomes)
    streams = [o for o in outcomes if o.endpoint == "/ask/stream" and o.status == 200]
    steady = [o for o in outcomes if not o.role]
    never_seen = _never_seen(run)
    return {
        "requests": len(outcomes),
        "duration_s": run.duration_s,
        "elapsed_s": round(run.elapsed_s, 1),
        "throughput_rps": round(len(steady) / run.duration_s, 2) if run.duration_s else 0.0,
        "by_endpoint_and_status": dict(sorted(by_status.items())),
        "stream_ends": dict(sorted(Counter(o.end for o in streams).items())),
        "by_llm_status": _by_llm_status(steady),
        **{kind: len(found) for kind, found in never_seen.items()},
        "examples": [
            f"{o.endpoint} {o.status} {o.end} {o.error or o.query}"
            for o in list(itertools.chain(*never_seen.values()))[:8]
        ],
        "faults_started_at_s": {name: round(at, 1) for name, at in run.faults.items()},
        "fault_notes": run.notes,
        "document_changes": verdicts.changes(run),
        "document_changes_not_acknowledged": sum(c.acked_at_s is None for c in run.changes),
        "llm_calls_for_questions_cached_before": {
            fault: len(calls) for fault, calls in verdicts.llm_calls_for_cached(run).items()
        },
        "hot_answers_during_stall": verdicts.hot_answers_during_stall(run),
        "redis_returns": verdicts.redis_returns(run),
        "latency_during_fault_ms": _latency_during_faults(run, steady),
        "burst": _burst(outcomes),
        "slow_readers": _slow_readers(outcomes),
    }


def failed(summary: dict[str, Any]) -> bool:
    return bool(
        summary["server_errors_other_than_503"]
        or summary["no_response"]
        or summary["streams_cut_without_error"]
        or summary["differing_texts"]
        or summary["stale_answers_after_change"]
        or summary["document_changes_not_acknowledged"]
    )
