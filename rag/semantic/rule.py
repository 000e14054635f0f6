"""The one decision rule of the semantic cache, used by the live cache and by
``rag semantic eval`` alike.

A candidate is served when its cosine to the query reaches ``threshold`` (the candidate gate),
no lexical guard names a trap (when ``guards`` is on), and the verifier's score reaches
``min_score``. The verifier is any ``rag.semantic.verifier.Verifier``; the ``semantic_verifier``
setting chooses its kind (``VERIFIERS``) and ``semantic_verifier_path`` its weight file, which
must be of that kind. The shipped kinds are the MLP over the two vectors (the default, behind a
high gate) and the cross-encoder that reads both questions (behind a low gate, ~0.7, where real
rewordings live).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rag.protocols import Vector
from rag.semantic.guards import facts, trap
from rag.semantic.verifier import Pair, Verifier, load_verifier
from rag.settings import Settings


@dataclass(frozen=True, slots=True)
class Decision:
    hit: bool
    similarity: float
    score: float | None  # verifier score; None when an earlier check already decided
    reason: str  # "hit", "below-threshold", a trap name ("negation", "number", …), "verifier"


@dataclass(frozen=True)
class SemanticRule:
    threshold: float  # cosine similarity the two query vectors must reach
    min_score: float  # verifier score the pair must reach
    verifier: Verifier
    guards: bool = True  # lexical guards before the verifier
    candidates: int = 5  # how many of a query's nearest entries the verifier reads

    @classmethod
    def from_settings(cls, settings: Settings) -> SemanticRule:
        """The live cache's rule: the one place that reads it from the settings, so that the
        service and ``rag semantic eval`` decide alike."""
        return cls.load(
            threshold=settings.semantic_threshold,
            min_score=settings.semantic_min_score,
            kind=settings.semantic_verifier,
            verifier_path=settings.verifier_path,
        )

    @classmethod
    def load(
        cls,
        *,
        threshold: float,
        min_score: float,
        verifier_path: Path,
        kind: str,
        guards: bool = True,
        candidates: int = 5,
    ) -> SemanticRule:
        """Load the verifier of ``kind`` from ``verifier_path`` once (per process); a file of
        another kind is a ``ConfigurationError``."""
        return cls(
            threshold=threshold,
            min_score=min_score,
            verifier=load_verifier(kind, verifier_path),
            guards=guards,
            candidates=candidates,
        )

    @property
    def kind(self) -> str:
        return self.verifier.kind

    def decide(
        self,
        query: str,
        vector: Vector,
        candidate: str,
        candidate_vector: Vector,
        *,
        threshold: float | None = None,
    ) -> Decision:
        return self.decide_pairs([Pair(query, vector, candidate, candidate_vector)], threshold)[0]

    def decide_many(
        self,
        query: str,
        vector: Vector,
        candidates: Sequence[tuple[str, Vector]],
        *,
        threshold: float | None = None,
    ) -> list[Decision]:
        """One query against its candidates; the verifier reads them in one call."""
        return self.decide_pairs([Pair(query, vector, c, cv) for c, cv in candidates], threshold)

    def decide_pairs(self, pairs: Sequence[Pair], threshold: float | None = None) -> list[Decision]:
        """Decide each pair with the gate, the guards and then, in one call for all the pairs
        still open, the verifier."""
        cutoff = self.threshold if threshold is None else threshold
        decisions: list[Decision | None] = []
        pending: list[Pair] = []
        for pair in pairs:
            similarity = pair.similarity
            if similarity < cutoff:
                decisions.append(Decision(False, similarity, None, "below-threshold"))
            elif self.guards and (name := trap(facts(pair.a), facts(pair.b))) is not None:
                decisions.append(Decision(False, similarity, None, name))
            else:
                decisions.append(None)
                pending.append(pair)
        scores = self.verifier.scores(pending).tolist() if pending else []
        if len(scores) != len(pending):
            raise ValueError(f"{self.kind} verifier: {len(scores)} scores for {len(pending)} pairs")
        verdicts = iter(scores)
        return [
            d if d is not None else self._verdict(pair, next(verdicts))
            for d, pair in zip(decisions, pairs, strict=True)
        ]

    def _verdict(self, pair: Pair, score: float) -> Decision:
        hit = score >= self.min_score
        return Decision(hit, pair.similarity, score, "hit" if hit else "verifier")
