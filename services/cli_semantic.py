"""``rag semantic eval | calibrate | train``: decide labelled question pairs with exactly the live
semantic cache's rule, choose its parameters, fine-tune its cross-encoder."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the commands import the library lazily: `rag --help` stays fast
    from rag.semantic.calibration import Pairs
    from rag.semantic.rule import SemanticRule
    from rag.settings import Settings


def fail(message: str) -> int:
    """Print the error the ``rag`` way; the exit status of a refused command."""
    print(f"rag: error: {message}", file=sys.stderr)
    return 2


async def _embedded_pairs(path: str, settings: Settings) -> Pairs:
    """The pairs of ``path``, embedded by the embedder the settings name."""
    from tqdm import tqdm

    from rag.embedding import SentenceTransformerEmbedder, default_model_path
    from rag.semantic.calibration import embed_pairs, read_pairs

    lines = read_pairs(Path(path))
    embedder = SentenceTransformerEmbedder(
        model_path=settings.embedding_model_path or default_model_path(),
        model_id=settings.embedding_model_id,
        batch_size=settings.embedding_batch_size,
    )
    try:
        with tqdm(total=2 * len(lines), unit="question", desc="embedding") as bar:
            return await embed_pairs(lines, embedder, progress=bar)
    finally:
        embedder.close()


def _live_rule_and_pairs(path: str) -> tuple[SemanticRule, Pairs]:
    """The rule the live cache uses (``SemanticRule.from_settings``: the verifier kind the
    settings choose, through the registry) and the pairs of ``path``, embedded."""
    from rag.semantic.rule import SemanticRule
    from rag.settings import Settings

    settings = Settings()
    rule = SemanticRule.from_settings(settings)  # first: a wrong weight file fails fast
    return rule, asyncio.run(_embedded_pairs(path, settings))


def cmd_semantic_eval(args: argparse.Namespace) -> int:
    """Decide each pair with exactly the live semantic cache's rule."""
    from rag.errors import RagError
    from rag.semantic.calibration import decide_all, summarize

    try:
        rule, pairs = _live_rule_and_pairs(args.pairs)
    except (RagError, OSError) as exc:
        return fail(str(exc))
    decisions = decide_all(rule, pairs)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            for line, decision in zip(pairs.lines, decisions, strict=True):
                echoed = {**line, "hit": decision.hit, "similarity": round(decision.similarity, 6)}
                out.write(json.dumps(echoed, ensure_ascii=False) + "\n")
    print(json.dumps(summarize(rule, pairs, decisions), indent=2))
    return 0


def cmd_semantic_train(args: argparse.Namespace) -> int:
    """Fine-tune the cross-encoder verifier on labelled pairs (CPU, one thread)."""
    import torch
    from tqdm import tqdm

    from rag.errors import RagError
    from rag.semantic.calibration import read_pairs
    from rag.semantic.cross_encoder import CrossEncoderVerifier
    from rag.semantic.training import TrainingPlan, train_cross_encoder

    torch.set_num_threads(1)  # the machine is shared: one core, bounded run
    try:
        lines = [line for path in args.pairs for line in read_pairs(Path(path))]
    except (RagError, OSError) as exc:
        return fail(str(exc))
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "semantic_cross_encoder.npz"
    plan = TrainingPlan(
        layers=args.layers,
        trained=args.trained,
        max_length=args.max_length,
        epochs=args.epochs,
        seed=args.seed,
    )
    with tqdm(total=plan.epochs * len(lines), unit="pair", desc="training") as bar:
        train_cross_encoder(lines, out, plan=plan, progress=bar)
    kind = CrossEncoderVerifier.kind  # the name the setting uses for it (VERIFIERS)
    print(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); calibrate it with\n"
        f"  RAG_SEMANTIC_VERIFIER={kind} RAG_SEMANTIC_VERIFIER_PATH={out} "
        "rag semantic calibrate PAIRS --max-false-hit-rate 0.02"
    )
    return 0


def cmd_semantic_budget(args: argparse.Namespace) -> int:
    """Choose gate and min score so the upper confidence bound of the false-hit rate fits."""
    from rag.errors import RagError
    from rag.semantic.calibration import calibrate_budget

    if not 0 < args.max_false_hit_rate < 1:
        return fail("--max-false-hit-rate must be between 0 and 1")
    try:
        rule, pairs = _live_rule_and_pairs(args.pairs)
    except (RagError, OSError) as exc:
        return fail(str(exc))
    thresholds = args.thresholds or list(rule.verifier.gates)
    best, table = calibrate_budget(
        rule, pairs, max_false_hit_rate=args.max_false_hit_rate, thresholds=thresholds
    )
    print(
        f"{rule.kind} verifier; false-hit rate = label-0 pairs served / label-0 pairs; "
        f"bound = upper one-sided 95 % Clopper-Pearson; budget {args.max_false_hit_rate}"
    )
    header = ("gate", "min_score", "false hits", "rate", "bound", "recall")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (6, 10, 11, 7, 7, 7), strict=True)))
    for p in table:
        print(
            f"{p.threshold:>6.2f} {p.min_score:>10.4f} {p.false_hits:>5}/{p.negatives:<5} "
            f"{p.false_hit_rate:>7.4f} {p.upper_bound:>7.4f} {p.recall:>7.3f}"
        )
    if best is None:
        return fail(f"no setting keeps the bound within {args.max_false_hit_rate} on these pairs")
    print(
        f"\nchosen: gate {best.threshold}, min_score {best.min_score}: recall {best.recall:.3f}, "
        f"precision {best.precision:.3f}, false-hit rate {best.false_hit_rate:.4f} "
        f"(upper bound {best.upper_bound:.4f})\nto use it set\n"
        f"  RAG_SEMANTIC_THRESHOLD={best.threshold} RAG_SEMANTIC_MIN_SCORE={best.min_score}"
    )
    return 0


def cmd_semantic_calibrate(args: argparse.Namespace) -> int:
    """Train the verifier and choose threshold and min score for a target precision."""
    from rag.errors import RagError
    from rag.semantic.calibration import calibrate, plot
    from rag.semantic.mlp import MLPVerifier
    from rag.settings import Settings

    if args.max_false_hit_rate is not None:
        return cmd_semantic_budget(args)
    if not 0 < args.target_precision < 1:
        return fail("--target-precision must be between 0 and 1")
    try:
        pairs = asyncio.run(_embedded_pairs(args.pairs, Settings()))
        result = calibrate(pairs, target_precision=args.target_precision, seed=args.seed)
    except (RagError, OSError) as exc:
        return fail(str(exc))
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    verifier_path, png_path = out_dir / "semantic_verifier.npz", out_dir / "calibration.png"
    result.verifier.save(verifier_path)
    plot(result, args.target_precision, png_path)
    kind = MLPVerifier.kind  # the name the setting uses for it (VERIFIERS)
    print(f"precision/recall on the held-out 20 % at precision >= {args.target_precision}:")
    print(f"{'threshold':>10} {'min_score':>10} {'precision':>10} {'recall':>8}")
    for row in result.table:
        print(
            f"{row['threshold']:>10.2f} {row['min_score']:>10.2f} "
            f"{row['precision']:>10.3f} {row['recall']:>8.3f}"
        )
    print(
        f"\nchosen: threshold {result.threshold}, min_score {result.min_score} "
        f"(precision {result.precision:.3f}, recall {result.recall:.3f})\n"
        f"wrote {verifier_path} and {png_path}; to use them set\n"
        f"  RAG_SEMANTIC_THRESHOLD={result.threshold} RAG_SEMANTIC_MIN_SCORE={result.min_score} "
        f"RAG_SEMANTIC_VERIFIER={kind} RAG_SEMANTIC_VERIFIER_PATH={verifier_path}"
    )
    return 0


def add_semantic_commands(sub: Any) -> None:
    """``rag semantic …`` on the ``rag`` parser's subcommands."""
    semantic = sub.add_parser("semantic", help="evaluate and calibrate the semantic cache")
    semantic_sub = semantic.add_subparsers(dest="semantic_command", required=True)
    evaluate = semantic_sub.add_parser("eval", help="decide labelled pairs with the live rule")
    evaluate.add_argument("pairs", help='JSONL: {"a": ..., "b": ..., "label": 0|1} per line')
    evaluate.add_argument("--out", help="echo each line with hit and similarity added")
    evaluate.set_defaults(func=cmd_semantic_eval)
    calib = semantic_sub.add_parser("calibrate", help="choose the rule's parameters")
    calib.add_argument("pairs", help='JSONL: {"a": ..., "b": ..., "label": 0|1} per line')
    goal = calib.add_mutually_exclusive_group(required=True)
    goal.add_argument(
        "--max-false-hit-rate",
        type=float,
        help="choose gate and min score of the configured verifier so the upper 95 %% bound of "
        "the share of label-0 pairs served stays within this",
    )
    goal.add_argument(
        "--target-precision", type=float, help="retrain the MLP verifier for this precision"
    )
    calib.add_argument("--thresholds", type=float, nargs="+", help="cosine gates to try")
    calib.add_argument("--out-dir", default=".data/semantic")
    calib.add_argument("--seed", type=int, default=0)
    calib.set_defaults(func=cmd_semantic_calibrate)
    train = semantic_sub.add_parser("train", help="fine-tune the cross-encoder verifier")
    train.add_argument("pairs", nargs="+", help='JSONL files: {"a", "b", "label"} per line')
    train.add_argument("--out-dir", default=".data/semantic")
    train.add_argument("--layers", type=int, default=6, help="encoder depth used (MiniLM: 6)")
    train.add_argument("--trained", type=int, default=2, help="top layers fine-tuned")
    train.add_argument("--max-length", type=int, default=64, help="tokens per pair")
    train.add_argument("--epochs", type=int, default=1)
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(func=cmd_semantic_train)
