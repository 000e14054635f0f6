"""The ``rag`` command: ``serve``, ``ingest``, ``ask``, ``cache stats|invalidate`` (and
``semantic …``, in ``services.cli_semantic``). It lives in ``services``
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
from pydantic import ValidationError
from pydantic_settings import SettingsError

from rag.cache.layers import INVALIDATION_TARGETS
from rag.types import CacheStatus
from services.cli_semantic import add_semantic_commands, fail

DEFAULT_URL = "http://127.0.0.1:8000"


class CliError(Exception):
    """Ends the command with its message and exit status 2."""


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rag.settings import Settings
    from services.app import create_app
    from services.serving import config

    settings = Settings()
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
    server_config = config(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level="info",
        access_log=settings.access_log,
    )
    uvicorn.Server(server_config).run()
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rag.corpus import open_corpus
    from rag.errors import RagError
    from rag.ingest import collect_documents
    from rag.settings import Settings

    async def run() -> int:
        documents = collect_documents([Path(p) for p in args.paths])
        if not documents:
            return fail("no .txt, .md or .html files found in the given paths")
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
        return fail(str(exc))


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
                return fail(f"{r.status_code}: {r.read().decode()}")
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
                        return fail(data["detail"])
    except httpx.TransportError as exc:
        return fail(f"cannot reach the service at {args.url} ({exc}); is `rag serve` running?")
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

    add_semantic_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        return fail(str(exc))
    except (ValidationError, SettingsError) as exc:  # neither shows a secret's value
        return fail(f"the settings are not valid: {exc}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
