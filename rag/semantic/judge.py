"""The answer judge: do two answers, to two questions, say the same thing?

Shadow mode and audits use it to judge a semantic candidate after the fact: the candidate's
cached answer against the answer the new question got (or would have got) by itself. That is
the cache's own standard of a correct hit (the hit gives what a miss would have given). It is a
``Verifier`` over a ``Pair`` of answers (texts and MiniLM vectors), and says "same" only when

- the two answers are close (cosine of their vectors at least ``min_cosine``),
- both say something (three content words at least: two empty answers are not "the same"),
- no fact differs: a leading yes/no, a negation on one side only, a number or date, a named
  entity (not counting a sentence's first word: ``rag.semantic.guards.facts`` cannot tell a
  name there from any capitalized word),
- and (``same``) the answers were built on sources that share a document.

When unsure it says "different": a false "different" only keeps a safe scope in shadow a
little longer; a false "same" would let a wrong answer be served.

What it can show depends on the generator: a small model gives nearly the same answer to
opposite questions and different answers to rewordings (see DESIGN.md), and often an empty one,
so with the local model it says "different" to nearly everything; ``scripts/eval_judge.py``
measures it both ways.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from rag.semantic.guards import QueryFacts, facts
from rag.semantic.verifier import Pair, Scores

_YES, _NO = frozenset({"yes", "yeah", "correct"}), frozenset({"no", "nope"})


def _polarity(x: QueryFacts) -> str | None:
    first = x.sequence[:1]
    if not first:
        return None
    return "yes" if first[0] in _YES else "no" if first[0] in _NO else None


_MIN_CONTENT_WORDS = 3  # fewer: "The answer is:", nothing to compare


def difference(a: str, b: str) -> str | None:
    """The first fact two answers disagree on, or why they cannot be compared; None if
    neither."""
    x, y = facts(a), facts(b)
    if min(len(x.content), len(y.content)) < _MIN_CONTENT_WORDS:
        return "empty"
    if _polarity(x) != _polarity(y):
        return "yes-no"
    if x.negated != y.negated:
        return "negation"
    if x.numbers != y.numbers:
        return "number"
    if set(x.entities) ^ set(y.entities):
        return "entity"
    return None


class AnswerJudge:
    """``Verifier`` of answer pairs: the score is the answers' cosine, 0 where a fact differs."""

    kind = "answer-judge"
    offload = False  # string checks and one dot product per pair

    def __init__(self, min_cosine: float) -> None:
        self.min_cosine = min_cosine

    @property
    def gates(self) -> tuple[float, ...]:
        return (self.min_cosine,)

    def scores(self, pairs: Sequence[Pair]) -> Scores:
        return np.array(
            [0.0 if difference(p.a, p.b) else max(p.similarity, 0.0) for p in pairs],
            dtype=np.float32,
        )

    def same(self, pair: Pair, sources_a: Collection[str], sources_b: Collection[str]) -> bool:
        """Whether the answers say the same thing, built on sources (document ids) in common."""
        if not set(sources_a) & set(sources_b):
            return False
        return bool(self.scores([pair])[0] >= self.min_cosine)
