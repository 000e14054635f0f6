"""``rag semantic eval | calibrate | train | report``: decide labelled question pairs with exactly
the live semantic cache's rule, choose its parameters, fine-tune its cross-encoder, and show what
a running service has measured of its semantic hits."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from services.cli_base import CliError, request, url_option

if TYPE_CHECKING:  # the commands import the library lazily: `rag --help` stays fast
    from rag.semantic.calibration import Pairs
    from rag.semantic.rule import SemanticRule
    from rag.settings import Settings


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


PAIRS_HELP = 'JSONL: {"a": ..., "b": ..., "label": 0|1} per line'


@click.group()
def semantic() -> None:
    """Evaluate and calibrate the semantic cache."""


@semantic.command("report")
@url_option
def semantic_report(url: str) -> None:
    """The mode, and per rule scope the judged candidates, false hits and their 95 % bound."""
    found = request("GET", f"{url}/stats", either=True).json()["semantic"]
    click.echo(f"mode: {found['mode']}")
    if not found["scopes"]:
        click.echo("no scope: the semantic cache is off")
        return
    click.echo(
        f"{'scope':<40} {'judged':>7} {'false':>6} {'rate':>7} {'bound 95%':>9} "
        f"{'threshold':>9}  serving"
    )
    for row in found["scopes"]:
        threshold = "-" if row["threshold"] is None else f"{row['threshold']:.2f}"
        click.echo(
            f"{row['scope']:<40} {row['judged']:>7} {row['false_hits']:>6} "
            f"{row['false_hit_rate']:>7.2%} {row['false_hit_upper_95']:>9.2%} {threshold:>9}  "
            f"{'yes' if row['serving'] else 'no'}"
        )


@semantic.command("eval")
@click.argument("pairs")
@click.option("--out", help="Echo each line with hit and similarity added.")
def semantic_eval(pairs: str, out: str | None) -> None:
    """Decide labelled PAIRS (JSONL) with exactly the live semantic cache's rule."""
    from rag.errors import RagError
    from rag.semantic.calibration import decide_all, summarize

    try:
        rule, embedded = _live_rule_and_pairs(pairs)
    except (RagError, OSError) as exc:
        raise CliError(str(exc)) from None
    decisions = decide_all(rule, embedded)
    if out:
        with open(out, "w", encoding="utf-8") as file:
            for line, decision in zip(embedded.lines, decisions, strict=True):
                echoed = {**line, "hit": decision.hit, "similarity": round(decision.similarity, 6)}
                file.write(json.dumps(echoed, ensure_ascii=False) + "\n")
    click.echo(json.dumps(summarize(rule, embedded, decisions), indent=2))


@semantic.command("train")
@click.argument("pairs", nargs=-1, required=True)
@click.option("--out-dir", default=".data/semantic", show_default=True)
@click.option("--layers", default=6, show_default=True, help="Encoder depth used (MiniLM: 6).")
@click.option("--trained", default=2, show_default=True, help="Top layers fine-tuned.")
@click.option("--max-length", default=64, show_default=True, help="Tokens per pair.")
@click.option("--epochs", default=1, show_default=True)
@click.option("--seed", default=0, show_default=True)
def semantic_train(
    pairs: tuple[str, ...],
    out_dir: str,
    layers: int,
    trained: int,
    max_length: int,
    epochs: int,
    seed: int,
) -> None:
    """Fine-tune the cross-encoder verifier on labelled PAIRS files (CPU, one thread)."""
    import torch
    from tqdm import tqdm

    from rag.errors import RagError
    from rag.semantic.calibration import read_pairs
    from rag.semantic.cross_encoder import CrossEncoderVerifier
    from rag.semantic.training import TrainingPlan, train_cross_encoder

    torch.set_num_threads(1)  # the machine is shared: one core, bounded run
    try:
        lines = [line for path in pairs for line in read_pairs(Path(path))]
    except (RagError, OSError) as exc:
        raise CliError(str(exc)) from None
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "semantic_cross_encoder.npz"
    plan = TrainingPlan(
        layers=layers, trained=trained, max_length=max_length, epochs=epochs, seed=seed
    )
    with tqdm(total=plan.epochs * len(lines), unit="pair", desc="training") as bar:
        train_cross_encoder(lines, out, plan=plan, progress=bar)
    kind = CrossEncoderVerifier.kind  # the name the setting uses for it (VERIFIERS)
    click.echo(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); calibrate it with\n"
        f"  RAG_SEMANTIC_VERIFIER={kind} RAG_SEMANTIC_VERIFIER_PATH={out} "
        "rag semantic calibrate PAIRS --max-false-hit-rate 0.02"
    )


def _budget(pairs: str, max_false_hit_rate: float, thresholds: tuple[float, ...]) -> None:
    """Choose gate and min score so the upper confidence bound of the false-hit rate fits."""
    from rag.errors import RagError
    from rag.semantic.calibration import calibrate_budget

    if not 0 < max_false_hit_rate < 1:
        raise CliError("--max-false-hit-rate must be between 0 and 1")
    try:
        rule, embedded = _live_rule_and_pairs(pairs)
    except (RagError, OSError) as exc:
        raise CliError(str(exc)) from None
    best, table = calibrate_budget(
        rule,
        embedded,
        max_false_hit_rate=max_false_hit_rate,
        thresholds=list(thresholds) or list(rule.verifier.gates),
    )
    click.echo(
        f"{rule.kind} verifier; false-hit rate = label-0 pairs served / label-0 pairs; "
        f"bound = upper one-sided 95 % Clopper-Pearson; budget {max_false_hit_rate}"
    )
    header = ("gate", "min_score", "false hits", "rate", "bound", "recall")
    click.echo(" ".join(f"{h:>{w}}" for h, w in zip(header, (6, 10, 11, 7, 7, 7), strict=True)))
    for p in table:
        click.echo(
            f"{p.threshold:>6.2f} {p.min_score:>10.4f} {p.false_hits:>5}/{p.negatives:<5} "
            f"{p.false_hit_rate:>7.4f} {p.upper_bound:>7.4f} {p.recall:>7.3f}"
        )
    if best is None:
        raise CliError(f"no setting keeps the bound within {max_false_hit_rate} on these pairs")
    click.echo(
        f"\nchosen: gate {best.threshold}, min_score {best.min_score}: recall {best.recall:.3f}, "
        f"precision {best.precision:.3f}, false-hit rate {best.false_hit_rate:.4f} "
        f"(upper bound {best.upper_bound:.4f})\nto use it set\n"
        f"  RAG_SEMANTIC_THRESHOLD={best.threshold} RAG_SEMANTIC_MIN_SCORE={best.min_score}"
    )


@semantic.command("calibrate")
@click.argument("pairs")
@click.option(
    "--max-false-hit-rate",
    type=float,
    help="Choose gate and min score of the configured verifier so the upper 95 % bound of the "
    "share of label-0 pairs served stays within this.",
)
@click.option("--target-precision", type=float, help="Retrain the MLP verifier for this precision.")
@click.option("--thresholds", type=float, multiple=True, help="A cosine gate to try (repeatable).")
@click.option("--out-dir", default=".data/semantic", show_default=True)
@click.option("--seed", default=0, show_default=True)
def semantic_calibrate(
    pairs: str,
    max_false_hit_rate: float | None,
    target_precision: float | None,
    thresholds: tuple[float, ...],
    out_dir: str,
    seed: int,
) -> None:
    """Choose the rule's parameters on labelled PAIRS (JSONL): a false-hit budget for the
    configured verifier, or a retrained MLP verifier for a target precision."""
    from rag.errors import RagError
    from rag.semantic.calibration import calibrate, plot
    from rag.semantic.mlp import MLPVerifier
    from rag.settings import Settings

    if (max_false_hit_rate is None) == (target_precision is None):
        raise click.UsageError("give exactly one of --max-false-hit-rate and --target-precision")
    if max_false_hit_rate is not None:
        return _budget(pairs, max_false_hit_rate, thresholds)
    assert target_precision is not None
    if not 0 < target_precision < 1:
        raise CliError("--target-precision must be between 0 and 1")
    try:
        embedded = asyncio.run(_embedded_pairs(pairs, Settings()))
        result = calibrate(embedded, target_precision=target_precision, seed=seed)
    except (RagError, OSError) as exc:
        raise CliError(str(exc)) from None
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    verifier_path, png_path = folder / "semantic_verifier.npz", folder / "calibration.png"
    result.verifier.save(verifier_path)
    plot(result, target_precision, png_path)
    kind = MLPVerifier.kind  # the name the setting uses for it (VERIFIERS)
    click.echo(f"precision/recall on the held-out 20 % at precision >= {target_precision}:")
    click.echo(f"{'threshold':>10} {'min_score':>10} {'precision':>10} {'recall':>8}")
    for row in result.table:
        click.echo(
            f"{row['threshold']:>10.2f} {row['min_score']:>10.2f} "
            f"{row['precision']:>10.3f} {row['recall']:>8.3f}"
        )
    click.echo(
        f"\nchosen: threshold {result.threshold}, min_score {result.min_score} "
        f"(precision {result.precision:.3f}, recall {result.recall:.3f})\n"
        f"wrote {verifier_path} and {png_path}; to use them set\n"
        f"  RAG_SEMANTIC_THRESHOLD={result.threshold} RAG_SEMANTIC_MIN_SCORE={result.min_score} "
        f"RAG_SEMANTIC_VERIFIER={kind} RAG_SEMANTIC_VERIFIER_PATH={verifier_path}"
    )
