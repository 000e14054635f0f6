"""Replay labelled question pairs as traffic through the semantic modes (issue #22).

Each pair is one request: ``a`` is the cached question, ``b`` the new one. The live rule (the
settings' verifier, guards and min score) decides each pair at the lowest threshold of
``semantic_auto_thresholds``; a pair it accepts is a *candidate*. Then, pair after pair in a
random order (one scope):

- ``on`` serves every candidate at the static threshold (``semantic_threshold``);
- ``auto`` serves a candidate when its similarity reaches the lowest threshold whose 95 %
  Clopper-Pearson bound, over the outcomes counted so far, is within the budget; every
  candidate it does not serve is judged as shadow mode would judge it, and a served one with
  probability ``--observe`` (1.0: every served hit is audited or gets feedback, as vCache
  evaluates; 0.05: audits alone);
- the label is the oracle a judge, an audit or a user would give (1: correct hit).

Printed per mode: hits served, false hits among them (the rate the budget is about), the share
of should-hit pairs served and of traps served. Mean and worst over ``--runs`` orders.

The default pair sets are held out of everything the rule was tuned on: the hand-written
families of ``tests/data/semantic_eval.jsonl`` (none in the verifier's training families) and
QQP dev (``../shared/data/pairs/qqp-dev.jsonl``, human labels).

Usage: python scripts/semantic_replay.py [PAIRS.jsonl ...] [--runs 5] [--observe 1.0] [--passes 1]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rag.embedding import SentenceTransformerEmbedder, default_model_path
from rag.semantic.calibration import embed_pairs, read_pairs
from rag.semantic.outcomes import ScopeOutcomes, increments, tallies
from rag.semantic.rule import SemanticRule
from rag.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SETS = [
    ROOT / "tests/data/semantic_eval.jsonl",
    ROOT.parent / "shared/data/pairs/qqp-dev.jsonl",
]


@dataclass
class Run:
    served: int = 0
    false: int = 0
    should_hit_served: int = 0
    traps_served: int = 0


class Counts:
    """The outcomes of one scope, counted as ``rag.semantic.outcomes.OutcomeStore`` counts
    them, in memory."""

    def __init__(self, grid: list[float]) -> None:
        self.grid = grid
        self.counts: Counter[str] = Counter()

    def record(self, similarity: float, *, correct: bool) -> None:
        self.counts.update(increments(self.grid, similarity, correct=correct))

    def outcomes(self) -> ScopeOutcomes:
        return tallies("replay", self.grid, dict(self.counts))


def replay_auto(
    candidates: list[tuple[float, int]], settings: Settings, observe: float, seed: int
) -> Run:
    rng = random.Random(seed)
    order = candidates[:]
    rng.shuffle(order)  # the set once; with --passes, each pass in an order of its own
    counts, run = Counts(settings.semantic_auto_thresholds), Run()
    for similarity, label in order:
        threshold = counts.outcomes().serving_threshold(settings.semantic_max_false_hit_rate)
        if threshold is not None and similarity >= threshold:
            run.served += 1
            run.false += label == 0
            run.should_hit_served += label == 1
            run.traps_served += label == 0
            if rng.random() < observe:
                counts.record(similarity, correct=label == 1)
        else:  # shadow: judged once the miss's own answer is done
            counts.record(similarity, correct=label == 1)
    return run


def replay_on(candidates: list[tuple[float, int]], static_threshold: float) -> Run:
    run = Run()
    for similarity, label in candidates:
        if similarity >= static_threshold:
            run.served += 1
            run.false += label == 0
            run.should_hit_served += label == 1
            run.traps_served += label == 0
    return run


def report(name: str, runs: list[Run], positives: int, negatives: int) -> None:
    rates = [r.false / r.served if r.served else 0.0 for r in runs]
    print(
        f"  {name:<34} served {statistics.mean(r.served for r in runs):7.1f}   "
        f"false-hit rate {statistics.mean(rates):6.2%} (worst {max(rates):6.2%})   "
        f"should-hit served {statistics.mean(r.should_hit_served for r in runs) / positives:6.1%}"
        f"   traps served {statistics.mean(r.traps_served for r in runs) / negatives:6.2%}"
    )


async def main(args: argparse.Namespace) -> None:
    settings = Settings()
    rule = SemanticRule.from_settings(settings)
    embedder = SentenceTransformerEmbedder(
        model_path=settings.embedding_model_path or default_model_path(),
        model_id=settings.embedding_model_id,
        batch_size=settings.embedding_batch_size,
    )
    low = settings.semantic_auto_thresholds[0]
    print(
        f"rule: {rule.kind} verifier, min score {rule.min_score}; static threshold "
        f"{settings.semantic_threshold}; auto grid {settings.semantic_auto_thresholds}, budget "
        f"{settings.semantic_max_false_hit_rate:.0%}; observe {args.observe:.0%} of served hits; "
        f"{args.passes} pass(es) over each set"
    )
    for path in args.pairs or DEFAULT_SETS:
        pairs = await embed_pairs(read_pairs(Path(path)), embedder)
        decisions = rule.decide_pairs(pairs.pairs(), threshold=low)
        labels = [int(x) for x in pairs.labels]
        candidates = [(d.similarity, y) for d, y in zip(decisions, labels, strict=True) if d.hit]
        candidates *= args.passes
        labels *= args.passes
        positives, negatives = sum(labels), len(labels) - sum(labels)
        print(
            f"\n{Path(path).name}: {len(labels)} pairs ({positives} should hit, {negatives} "
            f"traps); {len(candidates)} candidates at cosine >= {low}"
        )
        counts = Counts(settings.semantic_auto_thresholds)
        for similarity, label in candidates:
            counts.record(similarity, correct=label == 1)
        print(
            "  candidates' false-hit rate by threshold (all judged): "
            + ", ".join(
                f">= {t.threshold}: {t.false_hits}/{t.judged} ({t.rate:.1%})"
                for t in counts.outcomes().tallies
            )
        )
        on = replay_on(candidates, settings.semantic_threshold)
        report(f"on (static, {settings.semantic_threshold})", [on], positives, negatives)
        runs = [replay_auto(candidates, settings, args.observe, seed) for seed in range(args.runs)]
        report(f"auto ({args.runs} orders)", runs, positives, negatives)
    embedder.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="*", help="JSONL pairs (default: the held-out sets)")
    parser.add_argument("--runs", type=int, default=5, help="random orders of the traffic")
    parser.add_argument(
        "--passes", type=int, default=1, help="the set asked this many times (more traffic)"
    )
    parser.add_argument(
        "--observe", type=float, default=1.0, help="share of served hits whose outcome is seen"
    )
    asyncio.run(main(parser.parse_args()))
