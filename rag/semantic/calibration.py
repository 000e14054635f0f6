"""Calibration and evaluation of the semantic rule on labelled question pairs
(``{"a": ..., "b": ..., "label": 0|1}`` per line), behind ``rag semantic calibrate|eval``."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rag.errors import InvalidInputError
from rag.ingest import Progress
from rag.protocols import Embedder, Vector
from rag.semantic.guards import facts, trap
from rag.semantic.mlp import MLPVerifier, pair_features, train_verifier
from rag.semantic.outcomes import clopper_pearson_upper
from rag.semantic.rule import Decision, SemanticRule
from rag.semantic.verifier import Pair

Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Pairs:
    lines: list[dict[str, Any]]  # as read, so eval can echo them
    labels: npt.NDArray[np.int_]
    a: Matrix
    b: Matrix

    def pairs(self) -> list[Pair]:
        """Each line as a ``Pair`` with its two vectors."""
        return [Pair(x["a"], self.a[i], x["b"], self.b[i]) for i, x in enumerate(self.lines)]


def read_pairs(path: Path) -> list[dict[str, Any]]:
    lines = []
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
                if not (isinstance(line["a"], str) and isinstance(line["b"], str)):
                    raise TypeError("a and b must be strings")
                if line.get("label") not in (0, 1, None):
                    raise ValueError("label must be 0 or 1")
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise InvalidInputError(
                    f'{path}:{number}: expected {{"a": str, "b": str, "label": 0|1}} ({exc})'
                ) from exc
            lines.append(line)
    if not lines:
        raise InvalidInputError(f"{path}: no pairs")
    return lines


async def embed_pairs(
    lines: list[dict[str, Any]], embedder: Embedder, progress: Progress | None = None
) -> Pairs:
    vectors: dict[str, list[Vector]] = {"a": [], "b": []}
    for side in ("a", "b"):
        for start in range(0, len(lines), 256):
            batch = [line[side] for line in lines[start : start + 256]]
            vectors[side].extend(await embedder.embed(batch))
            if progress is not None:
                progress.update(len(batch))
    a, b = np.stack(vectors["a"]), np.stack(vectors["b"])
    labels = np.array([int(line.get("label") or 0) for line in lines])
    return Pairs(lines=lines, labels=labels, a=a, b=b)


def decide_all(rule: SemanticRule, pairs: Pairs) -> list[Decision]:
    return rule.decide_pairs(pairs.pairs())


def precision_recall(
    hits: npt.NDArray[np.bool_], labels: npt.NDArray[np.int_]
) -> tuple[float, float]:
    true_hits = int((hits & (labels == 1)).sum())
    precision = true_hits / int(hits.sum()) if hits.any() else 1.0
    recall = true_hits / int((labels == 1).sum()) if (labels == 1).any() else 0.0
    return precision, recall


def summarize(rule: SemanticRule, pairs: Pairs, decisions: Sequence[Decision]) -> dict[str, Any]:
    hits = np.array([d.hit for d in decisions])
    precision, recall = precision_recall(hits, pairs.labels)
    wrong = [
        d.reason for d, label in zip(decisions, pairs.labels, strict=True) if d.hit and not label
    ]
    return {
        "pairs": len(decisions),
        "positives": int((pairs.labels == 1).sum()),
        "hits": int(hits.sum()),
        "wrong_hits": len(wrong),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "threshold": rule.threshold,
        "min_score": rule.min_score,
        "verifier": rule.kind,
        "rejected_by": dict(Counter(d.reason for d in decisions if not d.hit).most_common()),
    }


@dataclass(frozen=True)
class Calibration:
    verifier: MLPVerifier
    threshold: float
    min_score: float
    precision: float  # on the held-out part
    recall: float
    table: list[dict[str, float]]  # best (min_score, precision, recall) per cosine threshold
    curves: dict[str, tuple[list[float], list[float]]]  # name -> (recalls, precisions)


def calibrate(pairs: Pairs, *, target_precision: float, seed: int = 0) -> Calibration:
    """Train the MLP verifier on 80 % of the pairs, then choose the cosine threshold and verifier
    score on the other 20 % that give the most recall at ``target_precision``."""
    n = len(pairs.lines)
    facts_a = [facts(line["a"]) for line in pairs.lines]
    facts_b = [facts(line["b"]) for line in pairs.lines]
    features = np.stack(
        [pair_features(pairs.a[i], pairs.b[i], facts_a[i], facts_b[i]) for i in range(n)]
    )
    order = np.random.default_rng(seed).permutation(n)
    held_out, train = order[: n // 5], order[n // 5 :]
    verifier = train_verifier(features[train], pairs.labels[train], seed=seed)

    labels = pairs.labels[held_out]
    cosine = (pairs.a[held_out] * pairs.b[held_out]).sum(axis=1)
    no_trap = np.array([trap(facts_a[i], facts_b[i]) is None for i in held_out])
    scores = verifier.score_features(features[held_out])
    table: list[dict[str, float]] = []
    best: tuple[float, float, float, float] | None = None  # recall, precision, threshold, score
    for threshold in np.round(np.arange(0.75, 0.97, 0.01), 2):
        row: dict[str, float] | None = None
        for min_score in np.round(np.arange(0.3, 1.0, 0.01), 2):
            hits = (cosine >= threshold) & no_trap & (scores >= min_score)
            if hits.sum() < 10:
                continue
            precision, recall = precision_recall(hits, labels)
            if precision >= target_precision and (row is None or recall > row["recall"]):
                row = {
                    "threshold": float(threshold),
                    "min_score": float(min_score),
                    "precision": precision,
                    "recall": recall,
                }
        if row is not None:
            table.append(row)
            if best is None or row["recall"] > best[0]:
                best = (row["recall"], row["precision"], row["threshold"], row["min_score"])
    if best is None:
        raise InvalidInputError(f"no setting reaches precision {target_precision} on these pairs")

    curves = {
        "cosine alone": _curve(cosine >= 0, cosine, labels),
        f"cosine ≥ {best[2]} + guards + verifier": _curve(
            (cosine >= best[2]) & no_trap, scores, labels
        ),
    }
    return Calibration(
        verifier=verifier,
        threshold=best[2],
        min_score=best[3],
        precision=best[1],
        recall=best[0],
        table=table,
        curves=curves,
    )


def _curve(
    eligible: npt.NDArray[np.bool_], score: npt.NDArray[np.float32], labels: npt.NDArray[np.int_]
) -> tuple[list[float], list[float]]:
    recalls, precisions = [], []
    for cut in np.quantile(score[eligible], np.linspace(0, 0.995, 200)) if eligible.any() else []:
        precision, recall = precision_recall(eligible & (score >= cut), labels)
        recalls.append(recall)
        precisions.append(precision)
    return recalls, precisions


def plot(calibration: Calibration, target_precision: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    for name, (recalls, precisions) in calibration.curves.items():
        ax.plot(recalls, precisions, label=name)
    ax.axhline(
        target_precision, color="grey", linestyle="--", linewidth=1, label="target precision"
    )
    ax.plot([calibration.recall], [calibration.precision], "o", color="black", label="chosen")
    ax.set_xlabel("recall (share of duplicate pairs served from cache)")
    ax.set_ylabel("precision (share of hits that are right)")
    ax.set_title("Semantic cache calibration (held-out pairs)")
    ax.set_ylim(0.5, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# -- a false-hit budget with a confidence bound ----------------------------------------------


@dataclass(frozen=True)
class BudgetPoint:
    threshold: float  # cosine gate
    min_score: float
    false_hits: int  # label-0 pairs served
    negatives: int
    upper_bound: float  # of the false-hit rate
    recall: float
    precision: float

    @property
    def false_hit_rate(self) -> float:
        return self.false_hits / self.negatives if self.negatives else 0.0


def calibrate_budget(
    rule: SemanticRule,
    pairs: Pairs,
    *,
    max_false_hit_rate: float,
    thresholds: Sequence[float],
    confidence: float = 0.95,
) -> tuple[BudgetPoint | None, list[BudgetPoint]]:
    """For each cosine gate in ``thresholds``, the lowest verifier score whose false-hit rate
    (share of label-0 pairs served) has an upper ``confidence`` bound within the budget; the
    point with the most recall over all gates (None if no point fits), and the table."""
    decisions = rule.decide_pairs(pairs.pairs(), threshold=min(thresholds))
    similarity = np.array([d.similarity for d in decisions])
    score = np.array([-1.0 if d.score is None else d.score for d in decisions])
    return budget_points(
        similarity,
        score,
        pairs.labels,
        max_false_hit_rate=max_false_hit_rate,
        thresholds=thresholds,
        confidence=confidence,
    )


def budget_points(
    similarity: npt.NDArray[np.float64],
    score: npt.NDArray[np.float64],
    labels: npt.NDArray[np.int_],
    *,
    max_false_hit_rate: float,
    thresholds: Sequence[float],
    confidence: float = 0.95,
) -> tuple[BudgetPoint | None, list[BudgetPoint]]:
    """``calibrate_budget`` on arrays: ``score`` < 0 marks a pair the guards rejected."""
    positive = labels == 1
    negatives = int((~positive).sum())
    cuts = np.unique(np.round(score[score >= 0], 4))
    table: list[BudgetPoint] = []
    for threshold in thresholds:
        gated = (similarity >= threshold) & (score >= 0)
        point = None
        for cut in cuts:  # ascending: the first that fits has the most recall
            hits = gated & (score >= cut)
            false_hits = int((hits & ~positive).sum())
            if false_hits > max_false_hit_rate * negatives:  # the bound is above the rate
                continue
            bound = clopper_pearson_upper(false_hits, negatives, confidence)
            if bound <= max_false_hit_rate:
                precision, recall = precision_recall(hits, labels)
                point = BudgetPoint(
                    float(threshold), float(cut), false_hits, negatives, bound, recall, precision
                )
                break
        if point is not None:
            table.append(point)
    best = max(table, key=lambda p: (p.recall, p.threshold), default=None)
    return best, table
