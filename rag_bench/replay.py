"""Sending the workload to the service, over HTTP to a running one or to the app started here
in-process, once per cache configuration from a cold cache."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from rag.settings import Settings
from rag_bench.configs import CONFIGS, LABELS
from rag_bench.memory import RedisProbe, memory_figures
from rag_bench.pricing import Prices, TokenCounter
from rag_bench.records import Record, failed_record, record_from_response
from rag_bench.summary import stats_delta, summarize
from rag_bench.workload import Query


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send requests, and (optionally) the Redis behind it for the memory figures."""

    url: str
    redis_url: str | None
    namespace: str
    llm_model: str
    max_tokens: int | None  # known in-process only


@contextlib.contextmanager
def in_process_service(
    *,
    max_tokens: int | None,
    llm_threads: int | None = None,
    admin_key: str = "",
    embedder: Any = None,
    redis_url: str | None = None,
    llm_base_url: str = "",
) -> Iterator[Target]:
    """The app on the real local parts, served by uvicorn in a thread, in a fresh namespace on a
    private embedded Valkey (or ``redis_url``); the LLM is started by the app as in ``rag serve``
    unless ``llm_base_url`` is given. ``embedder`` lets a test share its loaded model."""
    from rag.local import embedded_valkey
    from services.app import create_app
    from services.serving import serve_in_thread

    with contextlib.ExitStack() as stack:
        redis_url = redis_url or stack.enter_context(embedded_valkey())
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rag-bench-")))
        overrides: dict[str, Any] = {}
        if max_tokens is not None:
            overrides["llm_max_tokens"] = max_tokens
        if llm_threads is not None:
            overrides["llm_threads"] = llm_threads
        settings = Settings(
            namespace=f"bench-{uuid.uuid4().hex[:8]}",
            data_dir=data_dir,
            redis_url=redis_url,
            llm_base_url=llm_base_url,
            seed_sample_corpus=True,
            admin_api_key=admin_key,
            **overrides,
        )
        app = create_app(settings, embedder=embedder)
        with serve_in_thread(app, start_timeout_s=300) as url:
            yield Target(
                url=url,
                redis_url=redis_url,
                namespace=settings.namespace,
                llm_model=settings.llm_model,
                max_tokens=settings.llm_max_tokens,
            )


async def replay(
    client: httpx.AsyncClient,
    queries: Sequence[Query],
    cache: dict[str, Any],
    *,
    concurrency: int,
    tokens: TokenCounter,
    label: str,
) -> list[Record]:
    """Send every query in order, at most ``concurrency`` at a time (the semaphore is FIFO)."""
    gate = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(queries), desc=f"{label:>16}", unit="q", dynamic_ncols=True)

    async def one(index: int, query: Query) -> Record:
        async with gate:
            started = time.perf_counter()
            try:
                response = await client.post("/ask", json={"query": query.text, "cache": cache})
            except httpx.HTTPError as exc:
                ms = (time.perf_counter() - started) * 1000
                bar.update()
                return failed_record(index, query, ms, repr(exc))
            ms = (time.perf_counter() - started) * 1000
        record = record_from_response(index, query, response, ms, tokens)
        bar.update()
        return record

    try:
        return list(await asyncio.gather(*(one(i, q) for i, q in enumerate(queries))))
    finally:
        bar.close()


@dataclass(frozen=True, slots=True)
class _Run:
    """What every configuration's run shares."""

    client: httpx.AsyncClient
    queries: Sequence[Query]
    groups: dict[str, set[str]]  # question -> the workload groups it belongs to
    admin: dict[str, str]  # headers for POST /cache/invalidate
    probe: RedisProbe | None
    concurrency: int
    prices: Prices
    tokens: TokenCounter


async def _cold_start(run: _Run) -> None:
    cleared = await run.client.post("/cache/invalidate", json={"all": True}, headers=run.admin)
    if cleared.status_code == 401:
        raise SystemExit("POST /cache/invalidate needs the admin key (--admin-key)")
    cleared.raise_for_status()


async def _run_config(run: _Run, name: str) -> tuple[dict[str, Any], list[Record]]:
    """One configuration from a cold cache: its records, and their summary."""
    await _cold_start(run)
    probe = run.probe
    before_used = await probe.used_memory() if probe else 0
    before_entries = await probe.entries() if probe else {}
    before = (await run.client.get("/stats")).json()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    records = await replay(
        run.client,
        run.queries,
        CONFIGS[name],
        concurrency=run.concurrency,
        tokens=run.tokens,
        label=LABELS[name],
    )
    seconds = time.perf_counter() - started
    load = (round(load_before, 2), round(os.getloadavg()[0], 2))
    stats = stats_delta(before, (await run.client.get("/stats")).json())
    memory: dict[str, Any] = {"measured": False}
    if probe is not None:
        after_used, after_entries = await probe.used_memory(), await probe.entries()
        memory = memory_figures(before_used, after_used, before_entries, after_entries)
    summary = summarize(
        records, stats=stats, memory=memory, groups=run.groups, prices=run.prices, seconds=seconds
    )
    summary["load_average"] = {"before": load[0], "after": load[1]}
    return summary, records


async def _warm_up(client: httpx.AsyncClient) -> None:
    # One request the caches never keep, so no configuration pays the models' first-call cost.
    warm = await client.post(
        "/ask", json={"query": "What is cached?", "cache": {"mode": "no-store"}}
    )
    if warm.status_code == 401:
        raise SystemExit("POST /ask needs an API key (--api-key)")
    warm.raise_for_status()


async def run_configs(
    target: Target,
    queries: Sequence[Query],
    *,
    concurrency: int,
    admin_key: str,
    api_key: str = "",
    prices: Prices,
    tokens: TokenCounter,
    timeout_s: float,
) -> tuple[dict[str, Any], dict[str, list[Record]]]:
    """Every configuration in turn: summaries and records by configuration name."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    groups: dict[str, set[str]] = {}
    for q in queries:
        if q.group is not None:
            groups.setdefault(q.text, set()).add(q.group)
    probe = RedisProbe.open(target.redis_url, target.namespace) if target.redis_url else None
    summaries: dict[str, Any] = {}
    records: dict[str, list[Record]] = {}
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(
        base_url=target.url, timeout=timeout_s, headers=headers, limits=limits
    ) as client:
        await _warm_up(client)
        run = _Run(
            client=client,
            queries=queries,
            groups=groups,
            admin={"Authorization": f"Bearer {admin_key}"} if admin_key else {},
            probe=probe,
            concurrency=concurrency,
            prices=prices,
            tokens=tokens,
        )
        for name in CONFIGS:
            summaries[name], records[name] = await _run_config(run, name)
    if probe is not None:
        await probe.aclose()
    return summaries, records
