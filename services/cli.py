"""The ``rag`` command: ``serve``, ``ingest``, ``ask``, ``cache stats``. It lives in ``services``
because ``serve`` runs the FastAPI app.

``serve`` and ``ingest`` work in-process; ``ask`` and ``cache stats`` talk to a running service
(``--url``, default http://127.0.0.1:8000), since a local-mode vector DB serves one process."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from rag.cache.registry import INVALIDATION_TARGETS
from rag.types import CacheStatus

DEFAULT_URL = "http://127.0.0.1:8000"


class CliError(Exception):
    """Ends the command with its message and exit status 2."""


def _fail(message: str) -> int:
    print(f"rag: error: {message}", file=sys.stderr)
    return 2


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from rag.settings import Settings
    from services.app import create_app

    try:
        settings = Settings()
    except ValidationError as exc:  # the settings hide the values they refuse: no key is shown
        return _fail(f"the settings are not valid: {exc}")
    base = f"http://{args.host}:{args.port}"
    print(
        "Starting the RAG service (first start loads the models and ingests the sample corpus).\n"
        "When uvicorn reports 'Application startup complete', try:\n"
        f"  curl -s {base}/ask -H 'content-type: application/json' "
        """-d '{"query": "How long are LLM answers cached?"}'\n"""
        f"  curl -sN '{base}/ask/stream?query=What+happens+when+a+client+disconnects'\n"
        f"  curl -s {base}/stats\n"
        f"  open {base}/docs for the OpenAPI page\n",
        flush=True,
    )
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level="info",
        access_log=settings.access_log,
    )
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rag.errors import RagError
    from rag.ingest import collect_documents
    from rag.settings import Settings
    from rag.wiring import open_corpus

    async def run() -> int:
        documents = collect_documents([Path(p) for p in args.paths])
        if not documents:
            return _fail("no .txt, .md or .html files found in the given paths")
        settings = Settings()
        async with open_corpus(settings) as corpus:
            # A batch ingest has the machine: every core (the server keeps one for the LLM).
            corpus.embedder.use_threads(settings.ingest_threads)
            plan = corpus.ingestor.plan(documents)
            with tqdm(
                total=len(plan.chunks), unit="chunk", desc=f"ingesting {len(documents)} documents"
            ) as bar:
                report = await corpus.ingestor.write(plan, progress=bar)
        print(
            f"ingested {report.documents} documents as {report.chunks} chunks "
            f"(replaced {report.replaced_chunks}); corpus version {report.corpus_version}"
        )
        return 0

    try:
        return asyncio.run(run())
    except (RagError, RuntimeError) as exc:
        return _fail(str(exc))


def _headers(*, admin: bool = False, either: bool = False) -> dict[str, str]:
    """``Authorization`` with the admin key (``admin``), the client key, or (``either``: for what
    both open, such as /stats) the client key if set, else the admin key."""
    client = os.environ.get("RAG_CLIENT_API_KEY", "")
    admin_key = os.environ.get("RAG_ADMIN_API_KEY", "")
    key = admin_key if admin else client or (admin_key if either else "")
    return {"Authorization": f"Bearer {key}"} if key else {}


def _request(
    method: str, url: str, *, admin: bool = False, either: bool = False, **kwargs: Any
) -> httpx.Response:
    headers = _headers(admin=admin, either=either)
    try:
        response = httpx.request(method, url, headers=headers, timeout=120, **kwargs)
    except httpx.TransportError as exc:
        raise CliError(
            f"cannot reach the service at {url} ({exc}); is `rag serve` running?"
        ) from exc
    if response.status_code >= 400:
        raise CliError(f"{response.status_code}: {response.text}")
    return response


def cmd_ask(args: argparse.Namespace) -> int:
    body = {"query": args.query, "cache": {"mode": args.mode}}
    if args.top_k:
        body["top_k"] = args.top_k
    if not args.stream:
        answer = _request("POST", f"{args.url}/ask", json=body).json()
        print(answer["answer"])
        print(f"\ncache: {answer['cache']}  timings_ms: {answer['timings_ms']}", file=sys.stderr)
        return 0
    try:
        with httpx.stream(
            "POST", f"{args.url}/ask/stream", json=body, headers=_headers(), timeout=120
        ) as r:
            if r.status_code >= 400:
                return _fail(f"{r.status_code}: {r.read().decode()}")
            event = ""
            for line in r.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "token":
                        print(data["text"], end="", flush=True)
                    elif event == "meta":
                        print(f"cache: {data['cache']}", file=sys.stderr)
                    elif event == "done":
                        print(f"\n\ntimings_ms: {data['timings_ms']}", file=sys.stderr)
                    elif event == "error":
                        print()
                        return _fail(data["detail"])
    except httpx.TransportError as exc:
        return _fail(f"cannot reach the service at {args.url} ({exc}); is `rag serve` running?")
    return 0


def cmd_cache_stats(args: argparse.Namespace) -> int:
    stats = _request("GET", f"{args.url}/stats", either=True).json()
    statuses = [status.value for status in CacheStatus]
    print(f"{'layer':<10}", *(f"{s:>9}" for s in statuses), f"{'hit rate':>9}")
    for layer, row in stats["layers"].items():  # every layer the service reports
        print(
            f"{layer:<10}",
            *(f"{row.get(s, 0):>9.0f}" for s in statuses),
            f"{row['hit_rate']:>9.1%}",
        )
    calls = stats["upstream_calls"]
    print(
        f"\nupstream calls: llm {calls['llm']:.0f}, embedding {calls['embedding']:.0f}, "
        f"search {calls['search']:.0f}"
    )
    print(
        f"tokens saved: {stats['tokens_saved']:.0f}, dollars saved: {stats['cost_saved_usd']:.4f}"
    )
    return 0


async def _embedded_pairs(path: str) -> tuple[Any, Any]:
    from tqdm import tqdm

    from rag.embedding import SentenceTransformerEmbedder, default_model_path
    from rag.semantic.calibration import embed_pairs, read_pairs
    from rag.settings import Settings

    settings = Settings()
    lines = read_pairs(Path(path))
    embedder = SentenceTransformerEmbedder(
        model_path=settings.embedding_model_path or default_model_path(),
        model_id=settings.embedding_model_id,
        batch_size=settings.embedding_batch_size,
    )
    try:
        with tqdm(total=2 * len(lines), unit="question", desc="embedding") as bar:
            return settings, await embed_pairs(lines, embedder, progress=bar)
    finally:
        embedder.close()


def cmd_semantic_eval(args: argparse.Namespace) -> int:
    """Decide each pair with exactly the live semantic cache's rule."""
    from rag.errors import RagError
    from rag.semantic.calibration import decide_all, summarize
    from rag.semantic.rule import SemanticRule

    try:
        settings, pairs = asyncio.run(_embedded_pairs(args.pairs))
    except (RagError, OSError) as exc:
        return _fail(str(exc))
    rule = SemanticRule.load(
        threshold=settings.semantic_threshold,
        min_score=settings.semantic_min_score,
        verifier_path=settings.verifier_path,
    )
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
    from rag.semantic.training import TrainingPlan, train_cross_encoder

    torch.set_num_threads(1)  # the machine is shared: one core, bounded run
    try:
        lines = [line for path in args.pairs for line in read_pairs(Path(path))]
    except (RagError, OSError) as exc:
        return _fail(str(exc))
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
    print(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); calibrate it with\n"
        f"  RAG_SEMANTIC_VERIFIER_PATH={out} rag semantic calibrate PAIRS "
        "--max-false-hit-rate 0.02"
    )
    return 0


def cmd_semantic_budget(args: argparse.Namespace) -> int:
    """Choose gate and min score so the upper confidence bound of the false-hit rate fits."""
    from rag.errors import RagError
    from rag.semantic.calibration import calibrate_budget
    from rag.semantic.rule import SemanticRule

    if not 0 < args.max_false_hit_rate < 1:
        return _fail("--max-false-hit-rate must be between 0 and 1")
    try:
        settings, pairs = asyncio.run(_embedded_pairs(args.pairs))
    except (RagError, OSError) as exc:
        return _fail(str(exc))
    rule = SemanticRule.load(
        threshold=settings.semantic_threshold,
        min_score=settings.semantic_min_score,
        verifier_path=settings.verifier_path,
    )
    thresholds = args.thresholds or (
        [0.55, 0.6, 0.65, 0.7, 0.75, 0.8] if rule.kind == "cross-encoder" else [0.85, 0.9, 0.94]
    )
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
        return _fail(f"no setting keeps the bound within {args.max_false_hit_rate} on these pairs")
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

    if args.max_false_hit_rate is not None:
        return cmd_semantic_budget(args)
    if not 0 < args.target_precision < 1:
        return _fail("--target-precision must be between 0 and 1")
    try:
        _, pairs = asyncio.run(_embedded_pairs(args.pairs))
        result = calibrate(pairs, target_precision=args.target_precision, seed=args.seed)
    except (RagError, OSError) as exc:
        return _fail(str(exc))
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    verifier_path, png_path = out_dir / "semantic_verifier.npz", out_dir / "calibration.png"
    result.verifier.save(verifier_path)
    plot(result, args.target_precision, png_path)
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
        f"RAG_SEMANTIC_VERIFIER_PATH={verifier_path}"
    )
    return 0


def cmd_cache_invalidate(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.layer:
        body["layer"] = args.layer
    if args.tag:
        body["tag"] = args.tag
    if args.all:
        body["all"] = True
    result = _request("POST", f"{args.url}/cache/invalidate", admin=True, json=body).json()
    print(f"deleted {result['deleted']} keys")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag", description="RAG service with layered caching.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=cmd_serve)

    ingest = sub.add_parser("ingest", help="add or replace documents (.txt, .md, .html, folders)")
    ingest.add_argument("paths", nargs="+")
    ingest.set_defaults(func=cmd_ingest)

    ask = sub.add_parser("ask", help="ask a running service a question")
    ask.add_argument("query")
    ask.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    ask.add_argument("--top-k", type=int)
    ask.add_argument(
        "--mode", default="default", choices=["default", "no-cache", "no-store", "refresh"]
    )
    ask.add_argument("--url", default=DEFAULT_URL)
    ask.set_defaults(func=cmd_ask)

    cache = sub.add_parser("cache", help="cache statistics")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    stats = cache_sub.add_parser("stats", help="hits, misses and hit rates per layer")
    stats.add_argument("--url", default=DEFAULT_URL)
    stats.set_defaults(func=cmd_cache_stats)
    invalidate = cache_sub.add_parser(
        "invalidate", help="delete cache entries (uses RAG_ADMIN_API_KEY from the environment)"
    )
    target = invalidate.add_mutually_exclusive_group(required=True)
    target.add_argument("--layer", choices=list(INVALIDATION_TARGETS))
    target.add_argument("--tag", help="e.g. doc:<doc_id>: the answers built on that document")
    target.add_argument("--all", action="store_true", help="every entry of every layer")
    invalidate.add_argument("--url", default=DEFAULT_URL)
    invalidate.set_defaults(func=cmd_cache_invalidate)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        return _fail(str(exc))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
