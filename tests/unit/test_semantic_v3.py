"""The parts of semantic cache v3 that need no service: request ids, the answer judge's fact
checks, and how a scope's tallies choose where auto mode serves."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from rag.feedback import RequestIds, SemanticTicket, Ticket, request_id_secret
from rag.semantic.judge import AnswerJudge, difference
from rag.semantic.outcomes import ScopeOutcomes, Tally, clopper_pearson_upper
from rag.semantic.verifier import Pair

ANSWER_KEY = "rag:acme:llm:m:v2:" + "a" * 64
SEMANTIC = SemanticTicket("rag:acme:sem:s:" + "b" * 64, "rag:acme:semveto:" + "c" * 64, 0.95, "s")


def ids(namespace: str = "rag.acme", ttl_s: int = 3600) -> RequestIds:
    return RequestIds(secret=b"k" * 32, namespace=namespace, ttl_s=ttl_s)


@pytest.mark.parametrize("semantic", [None, SEMANTIC])
def test_a_request_id_names_its_answer_for_its_tenant_only(semantic: SemanticTicket | None) -> None:
    ticket = Ticket(ANSWER_KEY, 1000.0, semantic)
    request_id = ids().issue(ticket)
    assert ids().open(request_id, now=1001.0) == ticket
    assert ids("rag.globex").open(request_id, now=1001.0) is None  # another tenant's key
    assert RequestIds(secret=b"x" * 32, namespace="rag.acme", ttl_s=60).open(request_id) is None
    assert ids().open(request_id, now=1000.0 + 3601) is None  # older than its answers can live
    payload, _, mac = request_id.partition(".")
    assert ids().open(payload[:-2] + "xx." + mac, now=1001.0) is None  # tampered
    for garbage in ("", ".", "abc", "a.b.c", "é.é", request_id + "="):
        assert ids().open(garbage, now=1001.0) is None


@pytest.mark.parametrize(
    ("a", "b", "found"),
    [
        ("Answers are cached for one hour.", "Answers are kept for 1 hour.", None),
        ("Answers are cached for one hour.", "Answers are cached for two hours.", "number"),
        ("The answer is stored in Redis.", "The answer is not stored in Redis.", "negation"),
        ("Yes, answers are cached by default.", "No, answers are cached by default.", "yes-no"),
        ("The answer is:", "The answer is:", "empty"),  # nothing to compare: not "the same"
        ("The cache lives in Redis.", "The cache lives in Qdrant.", "entity"),
    ],
)
def test_the_judge_names_the_fact_two_answers_disagree_on(
    a: str, b: str, found: str | None
) -> None:
    assert difference(a, b) == found


def test_the_judge_says_same_only_for_close_answers_on_shared_sources() -> None:
    judge = AnswerJudge(0.9)
    v = np.array([1.0, 0.0], dtype=np.float32)
    close = np.array([0.95, np.sqrt(1 - 0.95**2)], dtype=np.float32)
    far = np.array([0.8, 0.6], dtype=np.float32)
    same_text = Pair("Answers kept one hour.", v, "Answers kept 1 hour.", close)
    assert judge.same(same_text, {"doc"}, {"doc", "other"})
    assert not judge.same(same_text, {"doc"}, {"other"})  # no source in common
    assert not judge.same(
        Pair("Answers kept one hour.", v, "Answers kept 1 hour.", far), {"d"}, {"d"}
    )
    assert not judge.same(
        Pair("Answers kept one hour.", v, "Answers kept 2 hours.", close), {"d"}, {"d"}
    )


def tallies(*rows: tuple[float, int, int]) -> ScopeOutcomes:
    return ScopeOutcomes("s", tuple(Tally(t, n, f) for t, n, f in rows))


def test_auto_serves_at_the_lowest_threshold_whose_bound_is_within_budget() -> None:
    assert (
        clopper_pearson_upper(0, 149) < 0.02 < clopper_pearson_upper(0, 148)
    )  # "enough outcomes" is in the bound
    nothing = tallies((0.86, 0, 0), (0.9, 0, 0))
    assert nothing.serving_threshold(0.02) is None
    grid = tallies((0.86, 400, 20), (0.9, 300, 1), (0.94, 200, 0), (0.97, 100, 0))
    assert grid.serving_threshold(0.02) == 0.9  # 1 in 300: bound 1.6 %; 20 in 400 is not
    assert grid.serving_threshold(0.001) is None
    row = grid.report(0.9, serving=True)
    assert (row["judged"], row["false_hits"], row["threshold"], row["serving"]) == (
        300,
        1,
        0.9,
        True,
    )
    assert grid.report(None, serving=False)["judged"] == 400  # over every outcome
    assert grid.report(0.95, serving=True)["judged"] == 200  # the grid's highest at or below


def test_processes_starting_at_once_agree_on_one_signing_key(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: request_id_secret("", tmp_path), range(32)))
    assert len(keys) == 1 and len(keys.pop()) == 32  # never an empty or half-written key
    assert [p.name for p in tmp_path.iterdir()] == ["request-id.key"]
    assert (tmp_path / "request-id.key").stat().st_mode & 0o777 == 0o600
    assert request_id_secret("configured", tmp_path) == b"configured"
