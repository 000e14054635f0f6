"""The one decision rule of the semantic cache, used by the live cache and by
``rag semantic eval`` alike: cosine ≥ threshold, no lexical trap, and the verifier agrees."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rag.protocols import Vector
from rag.semantic.guards import facts, trap
from rag.semantic.verifier import PairVerifier, pair_features


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
    verifier: PairVerifier

    @classmethod
    def load(cls, *, threshold: float, min_score: float, verifier_path: Path) -> SemanticRule:
        return cls(
            threshold=threshold, min_score=min_score, verifier=PairVerifier.load(verifier_path)
        )

    def decide(
        self,
        query: str,
        vector: Vector,
        candidate: str,
        candidate_vector: Vector,
        *,
        threshold: float | None = None,
    ) -> Decision:
        similarity = float(vector @ candidate_vector)
        if similarity < (self.threshold if threshold is None else threshold):
            return Decision(False, similarity, None, "below-threshold")
        a, b = facts(query), facts(candidate)
        if (name := trap(a, b)) is not None:
            return Decision(False, similarity, None, name)
        score = float(
            self.verifier.scores(pair_features(vector, candidate_vector, a, b)[None, :])[0]
        )
        if score < self.min_score:
            return Decision(False, similarity, score, "verifier")
        return Decision(True, similarity, score, "hit")
