"""When a semantic candidate is served, and how each one is judged afterwards
(``RAG_SEMANTIC_MODE``):

- ``off``: no lookup.
- ``shadow``: every exact miss is looked up at the lowest threshold of the grid; a candidate is
  never served. When the miss's own answer is complete (it is generated anyway) the answer
  judge compares it with the candidate's and the outcome is counted for the scope
  (``rag.semantic.outcomes``). No LLM call is added.
- ``auto``: as shadow, but a candidate is served where the scope's measured bound allows it: at
  or above the lowest threshold whose 95 % false-hit bound is within the budget. The bound is
  read on every lookup, so serving stops as soon as outcomes push it over.
- ``on``: served by the static rule (its threshold), as before outcomes were measured.

Where hits are served (``auto``, ``on``), ``audit_rate`` of them are regenerated in the
background and judged the same way, so the rate keeps being measured while serving; and a
user's feedback (``rag.feedback``) counts too.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

from rag.metrics import Metrics
from rag.protocols import Embedder
from rag.semantic.cache import SemanticMatch
from rag.semantic.judge import AnswerJudge
from rag.semantic.outcomes import OutcomeStore, ScopeOutcomes
from rag.semantic.verifier import Pair
from rag.settings import SemanticMode
from rag.types import ScoredChunk

log = logging.getLogger(__name__)


class SemanticPolicy:
    def __init__(
        self,
        *,
        mode: SemanticMode,
        namespace: str,
        scope: str,
        static_threshold: float,
        outcomes: OutcomeStore,
        judge: AnswerJudge,
        embedder: Embedder,
        budget: float,
        audit_rate: float,
        metrics: Metrics | None = None,
    ) -> None:
        self.mode = mode
        self.scope = scope  # the rule scope outcomes are counted in
        self.label = f"{namespace}/{scope}"  # names it in /stats and the metrics
        self._static_threshold = static_threshold
        self.outcomes = outcomes
        self._judge = judge
        self._embedder = embedder
        self.budget = budget
        self._audit_rate = audit_rate
        self._metrics = metrics  # the scope's gauges, set on every read

    @property
    def serves(self) -> bool:
        """Whether this mode can serve a semantic hit at all."""
        return self.mode in ("auto", "on")

    def lookup_threshold(self, requested: float | None) -> float:
        """The cosine gate of the lookup: the static rule's (or the request's) in ``on``; the
        grid's lowest otherwise, so every threshold auto could serve at is measured."""
        if self.mode == "on":
            return self._static_threshold if requested is None else requested
        return self.outcomes.grid[0]

    async def serve(self, match: SemanticMatch, requested: float | None) -> bool:
        """Whether ``match`` is given to the user (else it is a shadow candidate)."""
        if self.mode == "on":
            return True
        if self.mode != "auto":
            return False
        threshold = (await self.read()).serving_threshold(self.budget)
        if threshold is None:
            return False
        return match.similarity >= max(threshold, requested or 0.0)

    def audit_now(self) -> bool:
        """Whether this served hit is regenerated and judged."""
        return self._audit_rate > 0 and random.random() < self._audit_rate

    async def read(self) -> ScopeOutcomes:
        outcomes = await self.outcomes.read(self.scope)
        if self._metrics is not None:
            self._metrics.record_semantic(self.label, self.report(outcomes))
        return outcomes

    def report(self, outcomes: ScopeOutcomes) -> dict[str, Any]:
        """The scope's row of ``GET /stats``: where this mode serves, and what was measured
        there."""
        if self.mode == "on":
            threshold: float | None = self._static_threshold
        elif self.mode == "auto":
            threshold = outcomes.serving_threshold(self.budget)
        else:
            threshold = None
        return {**outcomes.report(threshold, serving=threshold is not None), "scope": self.label}

    async def judge(
        self, match: SemanticMatch, answer: str, sources: Sequence[ScoredChunk]
    ) -> None:
        """Judge ``match``'s answer against ``answer`` (the question's own, built on
        ``sources``) and count the outcome. Runs in the background: it never raises."""
        try:
            vectors = await self._embedder.embed([match.completion.text, answer])
            pair = Pair(match.completion.text, vectors[0], answer, vectors[1])
            same = self._judge.same(
                pair, {s.chunk.doc_id for s in match.sources}, {s.chunk.doc_id for s in sources}
            )
            await self.outcomes.record(self.scope, match.similarity, correct=same)
            await self.read()  # the gauges follow
        except Exception as exc:  # background work must not take anything down
            log.warning("could not judge a semantic candidate: %r", exc)
