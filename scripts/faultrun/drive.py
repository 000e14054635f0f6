"""One run: the hot questions asked once, then the steady clients and the faults together."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import httpx

from .clients import HOT, Session, ask, steady
from .faults import FaultInjector, schedule
from .outcomes import Run
from .servers import RedisProcess


@dataclass(frozen=True, kw_only=True)
class Plan:
    """The shape of a run, from the command line."""

    duration_s: float
    clients: int
    miss_clients: int  # of ``clients``, those asking new questions
    faults: list[str]  # in this order
    down_s: float  # how long Redis stays down in the restart fault
    seed: int


async def drive(url: str, server: RedisProcess, plan: Plan) -> Run:
    """Load the app at ``url`` for ``plan.duration_s`` while the faults run in turn."""
    rng = random.Random(plan.seed)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=300)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        run = Run(warmup=[await ask(http, query, time.monotonic()) for query in HOT])
        started = time.monotonic()
        session = Session(
            http=http, run=run, rng=rng, started=started, deadline=started + plan.duration_s
        )
        injector = FaultInjector(session=session, server=server, down_s=plan.down_s)
        jobs = [steady(session, misses=i < plan.miss_clients) for i in range(plan.clients)]
        starts = schedule(plan.faults, plan.duration_s)
        jobs += [injector.inject(fault, starts[fault]) for fault in plan.faults]
        await asyncio.gather(*jobs)
        run.duration_s, run.elapsed_s = plan.duration_s, time.monotonic() - started
    return run
