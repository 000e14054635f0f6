"""The MLP verifier of the semantic cache (kind ``"mlp"``, the default): a small neural network
(one hidden layer, numpy only) that scores whether two questions ask the same thing from their
MiniLM vectors and lexical features. Trained by ``rag semantic calibrate --target-precision`` on
labelled pairs; the default weights in ``rag/config/semantic_verifier.npz`` come from
``qqp-train.jsonl``. It scores in microseconds, so it runs behind a high cosine gate (0.94) on
the event loop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from rag.semantic.guards import QueryFacts, facts
from rag.semantic.verifier import Pair, Scores, check_weight_file

Array = npt.NDArray[np.float32]
LEXICAL_FEATURES = 5


def lexical_features(a: QueryFacts, b: QueryFacts) -> list[float]:
    union = a.content | b.content
    return [
        len(a.content & b.content) / len(union) if union else 1.0,
        float(len(a.content ^ b.content)),
        float(a.wh != b.wh),
        float(len(a.entities) + len(b.entities) > 0),
        abs(len(a.words) - len(b.words)) / max(len(a.words), len(b.words), 1),
    ]


def pair_features(a_vec: Array, b_vec: Array, a: QueryFacts, b: QueryFacts) -> Array:
    """Symmetric in (a, b): products and absolute differences of the vectors, their cosine,
    and lexical overlap."""
    return np.concatenate(
        [a_vec * b_vec, np.abs(a_vec - b_vec), [float(a_vec @ b_vec)], lexical_features(a, b)]
    ).astype(np.float32)


def features_of(pairs: Sequence[Pair]) -> Array:
    """``pair_features`` of each pair, one row each."""
    return np.stack([pair_features(p.a_vector, p.b_vector, facts(p.a), facts(p.b)) for p in pairs])


_ARRAYS = {"mean", "scale", "w1", "b1", "w2", "b2"}


@dataclass(frozen=True)
class MLPVerifier:
    """Satisfies ``rag.semantic.verifier.Verifier``."""

    mean: Array
    scale: Array
    w1: Array
    b1: Array
    w2: Array
    b2: float

    kind: ClassVar[str] = "mlp"
    offload: ClassVar[bool] = False
    gates: ClassVar[tuple[float, ...]] = (0.85, 0.9, 0.94)

    def scores(self, pairs: Sequence[Pair]) -> Scores:
        """Probability-like scores in [0, 1] from the vectors and lexical facts of each pair."""
        if not pairs:
            return np.zeros(0, np.float32)
        return self.score_features(features_of(pairs))

    def score_features(self, features: Array) -> Scores:
        """``scores`` on rows of ``pair_features`` already computed (calibration, training)."""
        hidden = np.maximum(0.0, ((features - self.mean) / self.scale) @ self.w1 + self.b1)
        return 1.0 / (1.0 + np.exp(-(hidden @ self.w2 + self.b2)))  # type: ignore[no-any-return]

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path, mean=self.mean, scale=self.scale, w1=self.w1, b1=self.b1, w2=self.w2, b2=self.b2
        )

    @classmethod
    def load(cls, path: Path) -> MLPVerifier:
        with np.load(path) as data:
            check_weight_file(path, data.files, kind=cls.kind, needs=_ARRAYS)
            return cls(
                mean=data["mean"],
                scale=data["scale"],
                w1=data["w1"],
                b1=data["b1"],
                w2=data["w2"],
                b2=float(data["b2"]),
            )


def train_verifier(
    features: Array,
    labels: npt.NDArray[np.int_],
    *,
    hidden: int = 128,
    epochs: int = 6,  # more overfits qqp-train (checked on a held-out split)
    learning_rate: float = 1e-3,
    weight_decay: float = 3e-3,
    seed: int = 0,
) -> MLPVerifier:
    """Binary cross-entropy, Adam, mini-batches of 128; deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    mean = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-6
    x = ((features - mean) / scale).astype(np.float32)
    y = labels.astype(np.float32)
    params = {
        "w1": (rng.standard_normal((x.shape[1], hidden)) * np.sqrt(2 / x.shape[1])).astype(
            np.float32
        ),
        "b1": np.zeros(hidden, np.float32),
        "w2": (rng.standard_normal(hidden) * np.sqrt(1 / hidden)).astype(np.float32),
        "b2": np.zeros(1, np.float32),
    }
    moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in params.items()}
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 128):
            batch = order[start : start + 128]
            xb, yb = x[batch], y[batch]
            pre = xb @ params["w1"] + params["b1"]
            h = np.maximum(0.0, pre)
            p = 1.0 / (1.0 + np.exp(-(h @ params["w2"] + params["b2"][0])))
            d_out = (p - yb) / len(batch)
            grads = {
                "w2": h.T @ d_out + weight_decay * params["w2"],
                "b2": np.array([d_out.sum()], np.float32),
            }
            d_h = np.outer(d_out, params["w2"]) * (pre > 0)
            grads["w1"] = xb.T @ d_h + weight_decay * params["w1"]
            grads["b1"] = d_h.sum(axis=0)
            step += 1
            for k, g in grads.items():
                m, v = moments[k]
                m[:] = 0.9 * m + 0.1 * g
                v[:] = 0.999 * v + 0.001 * g * g
                m_hat = m / (1 - 0.9**step)
                v_hat = v / (1 - 0.999**step)
                params[k] -= (learning_rate * m_hat / (np.sqrt(v_hat) + 1e-8)).astype(np.float32)
    return MLPVerifier(
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        w1=params["w1"],
        b1=params["b1"],
        w2=params["w2"],
        b2=float(params["b2"][0]),
    )
