"""The ``rag`` command, on click: ``serve``, ``ingest``, ``ask``, ``cache stats|invalidate`` (and
``semantic …``, in ``services.cli_semantic``). It lives in ``services`` because ``serve`` runs
the FastAPI app. Shell completion: ``eval "$(_RAG_COMPLETE=bash_source rag)"`` (zsh_source,
fish_source likewise). A refused command prints one line, ``rag: error: …``, and exits 2.

``serve`` and ``ingest`` work in-process; ``ask`` and ``cache stats`` talk to a running service
(``--url``, default http://127.0.0.1:8000), since a local-mode vector DB serves one process.
Libraries are imported inside the commands, so that ``rag --help`` stays fast."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click
import httpx
from pydantic import ValidationError
from pydantic_settings import SettingsError

from rag.cache.layers import INVALIDATION_TARGETS
from rag.types import CacheStatus
from services.cli_base import CliError, headers, request, url_option
from services.cli_semantic import semantic


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def rag() -> None:
    """RAG service with layered caching."""


rag.add_command(semantic)


@rag.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
def serve(host: str, port: int) -> None:
    """Run the HTTP service."""
    import uvicorn

    from rag.settings import Settings
    from services.app import create_app
    from services.serving import config

    settings = Settings()
    base = f"http://{host}:{port}"
    click.echo(
        "Starting the RAG service (first start loads the models and ingests the sample corpus).\n"
        "When uvicorn reports 'Application startup complete', try:\n"
        f"  curl -s {base}/ask -H 'content-type: application/json' "
        """-d '{"query": "How long are LLM answers cached?"}'\n"""
        f"  curl -sN '{base}/ask/stream?query=What+happens+when+a+client+disconnects'\n"
        f"  curl -s {base}/stats\n"
        f"  open {base}/docs for the OpenAPI page\n"
    )
    server_config = config(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        access_log=settings.access_log,
    )
    uvicorn.Server(server_config).run()


@rag.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def ingest(paths: tuple[Path, ...]) -> None:
    """Add or replace documents (.txt, .md, .html files and folders of them), each one all or
    nothing."""
    from tqdm import tqdm

    from rag.corpus import open_corpus
    from rag.errors import RagError
    from rag.ingest import collect_documents
    from rag.settings import Settings

    async def run() -> None:
        documents = collect_documents(list(paths))
        if not documents:
            raise CliError("no .txt, .md or .html files found in the given paths")
        settings = Settings()
        async with open_corpus(settings) as corpus:
            # A batch ingest has the machine: every core (the server keeps one for the LLM).
            corpus.embedder.use_threads(settings.ingest_threads)
            plan = corpus.ingestor.plan(documents)
            with tqdm(
                total=len(plan.chunks), unit="chunk", desc=f"ingesting {len(documents)} documents"
            ) as bar:
                report = await corpus.ingestor.write(plan, progress=bar)
        click.echo(
            f"ingested {report.documents} documents as {report.chunks} chunks "
            f"(replaced {report.replaced_chunks}); corpus version {report.corpus_version}"
        )

    try:
        asyncio.run(run())
    except (RagError, RuntimeError) as exc:
        raise CliError(str(exc)) from None


@rag.command()
@click.argument("query")
@click.option("--stream", is_flag=True, help="Print tokens as they arrive.")
@click.option("--top-k", type=int, help="Chunks retrieved (default: the service's).")
@click.option(
    "--mode",
    type=click.Choice(["default", "no-cache", "no-store", "refresh"]),
    default="default",
    show_default=True,
)
@url_option
def ask(query: str, stream: bool, top_k: int | None, mode: str, url: str) -> None:
    """Ask a running service a question."""
    body: dict[str, Any] = {"query": query, "cache": {"mode": mode}}
    if top_k:
        body["top_k"] = top_k
    if not stream:
        answer = request("POST", f"{url}/ask", json=body).json()
        click.echo(answer["answer"])
        click.echo(f"\ncache: {answer['cache']}  timings_ms: {answer['timings_ms']}", err=True)
        return
    try:
        with httpx.stream(
            "POST", f"{url}/ask/stream", json=body, headers=headers(), timeout=120
        ) as r:
            if r.status_code >= 400:
                raise CliError(f"{r.status_code}: {r.read().decode()}")
            event = ""
            for line in r.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "token":
                        click.echo(data["text"], nl=False)
                    elif event == "meta":
                        click.echo(f"cache: {data['cache']}", err=True)
                    elif event == "done":
                        click.echo(f"\n\ntimings_ms: {data['timings_ms']}", err=True)
                    elif event == "error":
                        click.echo()
                        raise CliError(data["detail"])
    except httpx.TransportError as exc:
        raise CliError(
            f"cannot reach the service at {url} ({exc}); is `rag serve` running?"
        ) from None


@rag.group()
def cache() -> None:
    """Cache statistics and invalidation."""


@cache.command()
@url_option
def stats(url: str) -> None:
    """Hits, misses and hit rates per layer."""
    found = request("GET", f"{url}/stats", either=True).json()
    statuses = [status.value for status in CacheStatus]
    click.echo(" ".join([f"{'layer':<10}", *(f"{s:>9}" for s in statuses), f"{'hit rate':>9}"]))
    for layer, row in found["layers"].items():  # every layer the service reports
        cells = [f"{row.get(s, 0):>9.0f}" for s in statuses]
        click.echo(" ".join([f"{layer:<10}", *cells, f"{row['hit_rate']:>9.1%}"]))
    calls = found["upstream_calls"]
    click.echo(
        f"\nupstream calls: llm {calls['llm']:.0f}, embedding {calls['embedding']:.0f}, "
        f"search {calls['search']:.0f}"
    )
    click.echo(
        f"tokens saved: {found['tokens_saved']:.0f}, dollars saved: {found['cost_saved_usd']:.4f}"
    )


@cache.command()
@click.option("--layer", type=click.Choice(list(INVALIDATION_TARGETS)), help="Every entry of it.")
@click.option("--tag", help="e.g. doc:<doc_id>: the answers built on that document.")
@click.option("--all", "everything", is_flag=True, help="Every entry of every layer.")
@url_option
def invalidate(layer: str | None, tag: str | None, everything: bool, url: str) -> None:
    """Delete cache entries (uses RAG_ADMIN_API_KEY from the environment)."""
    if sum([layer is not None, tag is not None, everything]) != 1:
        raise click.UsageError("give exactly one of --layer, --tag and --all")
    body: dict[str, Any] = {"layer": layer} if layer else {"tag": tag} if tag else {"all": True}
    result = request("POST", f"{url}/cache/invalidate", admin=True, json=body).json()
    click.echo(f"deleted {result['deleted']} keys")


def main(argv: list[str] | None = None) -> int:
    """``rag``: the exit status of the command (0, 2 when refused)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
    try:
        rag.main(args=argv, prog_name="rag", standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help
        return exc.exit_code
    except click.ClickException as exc:  # CliError, and usage errors (exit 2)
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("rag: aborted", err=True)
        return 1
    except (ValidationError, SettingsError) as exc:  # neither shows a secret's value
        CliError(f"the settings are not valid: {_one_line(exc)}").show()
        return 2
    return 0


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
