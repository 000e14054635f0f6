"""Ablation of the semantic rule: cosine only / + guards / + MLP (current) / cross-encoder /
cross-encoder + guards, each calibrated on the same split to the same false-hit budget (upper
one-sided 95 % Clopper-Pearson bound of the share of label-0 pairs served), then measured on
the other sets. The current shipped setting (cosine 0.94 + guards + MLP 0.3) is one more row.

Usage: python scripts/semantic_ablation.py --calibration CAL.jsonl --sets NAME=PAIRS.jsonl ...
       [--budget 0.02] [--cross-encoder rag/config/semantic_cross_encoder.npz]
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rag.embedding import SentenceTransformerEmbedder, default_model_path
from rag.semantic.calibration import Pairs, budget_points, embed_pairs, read_pairs
from rag.semantic.cross_encoder import CrossEncoderVerifier
from rag.semantic.guards import facts, trap
from rag.semantic.mlp import MLPVerifier
from rag.settings import DEFAULT_CROSS_ENCODER, DEFAULT_VERIFIER

CE_GATES = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8]
MLP_GATES = [0.8, 0.85, 0.88, 0.9, 0.92, 0.94]
COSINE_GATES = [float(g) for g in np.round(np.arange(0.80, 1.0, 0.005), 3)]


def columns(pairs: Pairs, mlp: MLPVerifier, ce: CrossEncoderVerifier) -> dict[str, Any]:
    cosine = (pairs.a * pairs.b).sum(axis=1).astype(np.float64)
    no_trap = np.array([trap(facts(x["a"]), facts(x["b"])) is None for x in pairs.lines])
    both = pairs.pairs()
    ce_scores = np.concatenate(
        [ce.scores(both[s : s + 64]) for s in tqdm(range(0, len(both), 64), desc="cross-encoder")]
    )
    return {
        "labels": pairs.labels,
        "cosine": cosine,
        "no_trap": no_trap,
        "mlp": mlp.scores(both).astype(np.float64),
        "ce": ce_scores.astype(np.float64),
    }


VARIANTS = {  # name -> (score column or None for cosine, guards, gates)
    "cosine only": (None, False, COSINE_GATES),
    "cosine + guards": (None, True, COSINE_GATES),
    "cosine + guards + MLP": ("mlp", True, MLP_GATES),
    "cross-encoder": ("ce", False, CE_GATES),
    "cross-encoder + guards": ("ce", True, CE_GATES),
}


def score_of(col: dict[str, Any], name: str) -> Any:
    column, guards, _ = VARIANTS[name]
    score = col["cosine"].copy() if column is None else col[column].copy()
    if guards:
        score[~col["no_trap"]] = -1.0
    return score


def measure(col: dict[str, Any], hits: Any) -> str:
    labels = col["labels"]
    neg, pos = labels == 0, labels == 1
    served = (hits & neg).sum() / max(neg.sum(), 1)
    recall = (hits & pos).sum() / max(pos.sum(), 1)
    precision = (hits & pos).sum() / hits.sum() if hits.any() else 1.0
    return f"{served:6.1%} {recall:6.1%} {precision:5.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calibration", required=True)
    parser.add_argument("--sets", nargs="+", required=True, help="NAME=PAIRS.jsonl")
    parser.add_argument("--budget", type=float, default=0.02)
    parser.add_argument("--cross-encoder", default=str(DEFAULT_CROSS_ENCODER))
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    embedder = SentenceTransformerEmbedder(
        model_path=default_model_path(), model_id="all-MiniLM-L6-v2", batch_size=64
    )
    mlp = MLPVerifier.load(DEFAULT_VERIFIER)
    ce = CrossEncoderVerifier.load(Path(args.cross_encoder))
    named = [("calibration", args.calibration)] + [tuple(s.split("=", 1)) for s in args.sets]
    cols = {
        name: columns(asyncio.run(embed_pairs(read_pairs(Path(path)), embedder)), mlp, ce)
        for name, path in named
    }
    embedder.close()
    cal = cols["calibration"]
    names = [n for n, _ in named if n != "calibration"]
    print(f"budget: upper 95 % bound of traps served <= {args.budget} on the calibration split")
    print("each cell: traps served / should-hit served (recall) / precision\n")
    print(f"{'variant':<26} {'gate':>6} {'score':>7} | " + " | ".join(f"{n:^26}" for n in names))
    rows: list[tuple[str, float, float]] = [("current (0.94, MLP 0.3)", 0.94, 0.3)]
    for variant, (_, _, gates) in VARIANTS.items():
        best, _ = budget_points(
            cal["cosine"],
            score_of(cal, variant),
            cal["labels"],
            max_false_hit_rate=args.budget,
            thresholds=gates,
        )
        if best is None:
            print(f"{variant:<26} no point within the budget")
            continue
        rows.append((variant, best.threshold, best.min_score))
    for variant, gate, cut in rows:
        name = "cosine + guards + MLP" if variant.startswith("current") else variant
        cells = []
        for n in names:
            col = cols[n]
            hits = (col["cosine"] >= gate) & (score_of(col, name) >= cut)
            cells.append(measure(col, hits))
        print(f"{variant:<26} {gate:>6.3f} {cut:>7.4f} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
