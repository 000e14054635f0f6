"""The one decision rule of the semantic cache, used by the live cache and by
``rag semantic eval`` alike.

A candidate is served when its cosine to the query reaches ``threshold`` (the candidate gate),
no lexical guard names a trap (when ``guards`` is on), and the verifier's score reaches
``min_score``. The verifier is either

- the cross-encoder (``rag/config/semantic_cross_encoder.npz``): reads both questions in one pass;
  the gate sits low (~0.7) where real rewordings live, and the top candidates of a query are
  scored in one batch; or
- the small MLP over the two vectors (``rag/config/semantic_verifier.npz``), behind a high gate.

Which one is decided by the weight file the settings point at (``semantic_verifier``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.protocols import Vector
from rag.semantic.cross_encoder import CrossEncoderVerifier, Precision
from rag.semantic.guards import facts, trap
from rag.semantic.verifier import Array, PairVerifier, pair_features

BATCH = 64  # pairs per cross-encoder forward pass when many pairs are decided at once


@dataclass(frozen=True, slots=True)
class Decision:
    hit: bool
    similarity: float
    score: float | None  # verifier score; None when an earlier check already decided
    reason: str  # "hit", "below-threshold", a trap name ("negation", "number", …), "verifier"


Item = tuple[str, Vector, str, Vector]  # query, its vector, candidate, its vector


def is_cross_encoder_file(path: Path) -> bool:
    with np.load(path) as data:
        return "layers" in data.files


@dataclass(frozen=True)
class SemanticRule:
    threshold: float  # cosine similarity the two query vectors must reach
    min_score: float  # verifier score the pair must reach
    verifier: PairVerifier | CrossEncoderVerifier
    guards: bool = True  # lexical guards before the verifier
    candidates: int = 5  # how many of a query's nearest entries the verifier reads

    @classmethod
    def load(
        cls,
        *,
        threshold: float,
        min_score: float,
        verifier_path: Path,
        guards: bool = True,
        candidates: int = 5,
        precision: Precision = "auto",
    ) -> SemanticRule:
        """Load the verifier once (per process); the file says which kind it is. ``precision``
        is the cross-encoder's (``CrossEncoderVerifier.load``)."""
        verifier: PairVerifier | CrossEncoderVerifier = (
            CrossEncoderVerifier.load(verifier_path, precision=precision)
            if is_cross_encoder_file(verifier_path)
            else PairVerifier.load(verifier_path)
        )
        return cls(
            threshold=threshold,
            min_score=min_score,
            verifier=verifier,
            guards=guards,
            candidates=candidates,
        )

    @property
    def kind(self) -> str:
        return "cross-encoder" if isinstance(self.verifier, CrossEncoderVerifier) else "mlp"

    def decide(
        self,
        query: str,
        vector: Vector,
        candidate: str,
        candidate_vector: Vector,
        *,
        threshold: float | None = None,
    ) -> Decision:
        return self.decide_pairs([(query, vector, candidate, candidate_vector)], threshold)[0]

    def decide_many(
        self,
        query: str,
        vector: Vector,
        candidates: Sequence[tuple[str, Vector]],
        *,
        threshold: float | None = None,
    ) -> list[Decision]:
        """One query against its candidates; the verifier reads them in one batch."""
        return self.decide_pairs([(query, vector, c, cv) for c, cv in candidates], threshold)

    def decide_pairs(self, items: Sequence[Item], threshold: float | None = None) -> list[Decision]:
        """Decide each (query, vector, candidate, vector) with the gate, guards and verifier."""
        cutoff = self.threshold if threshold is None else threshold
        decisions: list[Decision | None] = []
        pending: list[int] = []
        features: list[Array] = []
        for i, (a, a_vec, b, b_vec) in enumerate(items):
            similarity = float(a_vec @ b_vec)
            if similarity < cutoff:
                decisions.append(Decision(False, similarity, None, "below-threshold"))
                continue
            fa, fb = facts(a), facts(b)
            if self.guards and (name := trap(fa, fb)) is not None:
                decisions.append(Decision(False, similarity, None, name))
                continue
            decisions.append(None)
            pending.append(i)
            if isinstance(self.verifier, PairVerifier):
                features.append(pair_features(a_vec, b_vec, fa, fb))
        scores = self._scores(items, pending, features)
        for i, score in zip(pending, scores.tolist(), strict=True):
            similarity = float(items[i][1] @ items[i][3])
            hit = score >= self.min_score
            decisions[i] = Decision(hit, similarity, score, "hit" if hit else "verifier")
        return [d for d in decisions if d is not None]

    def _scores(self, items: Sequence[Item], pending: list[int], features: list[Array]) -> Array:
        if not pending:
            return np.zeros(0, np.float32)
        if isinstance(self.verifier, PairVerifier):
            return self.verifier.scores(np.stack(features))
        pairs = [(items[i][0], items[i][2]) for i in pending]
        return np.concatenate(
            [self.verifier.scores(pairs[s : s + BATCH]) for s in range(0, len(pairs), BATCH)]
        )
