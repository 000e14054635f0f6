"""One run: the watched documents ingested and the hot questions asked once, then the steady
clients and the faults together."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import httpx

from .clients import HOT, Session, ask, steady
from .documents import WATCHED, ingest_watched
from .faults import FaultInjector, FaultTimes, schedule
from .outcomes import Outcome, Run
from .servers import RedisProcess


@dataclass(frozen=True, kw_only=True)
class Plan:
    """The shape of a run, from the command line."""

    duration_s: float
    clients: int
    miss_clients: int  # of ``clients``, those asking new questions
    faults: list[str]  # in this order
    times: FaultTimes
    seed: int


async def _warm_up(http: httpx.AsyncClient) -> list[Outcome]:
    """Ingest the watched documents and ask every hot question once (so it is cached); refuse
    to go on when a watched question is not answered from its document (the stale-answer
    verdict would see nothing)."""
    await ingest_watched(http)
    warmup = [await ask(http, query, time.monotonic()) for query in HOT]
    for doc in WATCHED:
        outcome = await ask(http, doc.question, time.monotonic())
        if not any(doc.before in text for text in outcome.sources):
            raise SystemExit(f"{doc.question!r} is not answered from {doc.doc_id}: {outcome}")
        warmup.append(outcome)
    return warmup


async def drive(url: str, server: RedisProcess, plan: Plan) -> Run:
    """Load the app at ``url`` for ``plan.duration_s`` while the faults run in turn."""
    rng = random.Random(plan.seed)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=300)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        run = Run(warmup=await _warm_up(http))
        started = time.monotonic()
        session = Session(
            http=http,
            run=run,
            rng=rng,
            started=started,
            deadline=started + plan.duration_s,
            hot=[o.query for o in run.warmup],
        )
        injector = FaultInjector(session=session, server=server, times=plan.times)
        jobs = [steady(session, misses=i < plan.miss_clients) for i in range(plan.clients)]
        starts = schedule(plan.faults, plan.duration_s)
        jobs += [injector.inject(fault, starts[fault]) for fault in plan.faults]
        await asyncio.gather(*jobs)
        run.duration_s, run.elapsed_s = plan.duration_s, time.monotonic() - started
    return run
