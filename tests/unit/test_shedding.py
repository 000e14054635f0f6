"""Load shedding's two bounds: generation slots go to the generation most requests wait for,
and a tenant's token bucket refuses what is over its rate."""

from __future__ import annotations

import asyncio

import pytest

from rag.errors import OverloadedError, RateLimitedError
from rag.shedding import GenerationLimiter, TokenBucket


def _limiter(running: int) -> GenerationLimiter:
    return GenerationLimiter(max_running=running, max_waiting=10, retry_after_s=1)


async def test_a_freed_slot_goes_to_the_generation_most_requests_wait_for() -> None:
    limiter, order = _limiter(1), []
    release = asyncio.Event()

    async def generate(name: str, demand: int) -> None:
        async with limiter.slot(lambda: demand):
            order.append(name)
            if name == "first":
                await release.wait()

    tasks = [asyncio.create_task(generate("first", 1))]
    await asyncio.sleep(0)
    for name, demand in [("cold", 1), ("hot", 8), ("cold again", 1), ("warm", 3)]:
        tasks.append(asyncio.create_task(generate(name, demand)))
        await asyncio.sleep(0)
    assert order == ["first"]
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["first", "hot", "warm", "cold", "cold again"]  # oldest first on a tie


async def test_a_cancelled_waiter_gives_nothing_away() -> None:
    limiter = _limiter(2)
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with limiter.slot():
            holding.set()
            await release.wait()

    holders = [asyncio.create_task(hold()) for _ in range(2)]
    await holding.wait()
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter.cancel()
    release.set()
    await asyncio.gather(*holders, waiter, return_exceptions=True)

    # both slots are free again, and no more than both: a third generation waits
    entered = []

    async def enter(n: int) -> None:
        async with limiter.slot():
            entered.append(n)
            await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(enter(n)) for n in range(3)]
    await asyncio.sleep(0.01)
    assert entered == [0, 1]
    await asyncio.gather(*tasks)
    assert entered == [0, 1, 2]


async def test_a_slot_freed_as_its_next_waiter_is_cancelled_goes_to_the_one_after() -> None:
    limiter, release, entered = _limiter(1), asyncio.Event(), []

    async def generate(name: str) -> None:
        async with limiter.slot():
            entered.append(name)
            if name == "holder":
                await release.wait()

    holder = asyncio.create_task(generate("holder"))
    await asyncio.sleep(0)
    gone, next_one = asyncio.create_task(generate("gone")), asyncio.create_task(generate("next"))
    await asyncio.sleep(0)
    release.set()  # the holder leaves first, while "gone" is still queued but already cancelled
    gone.cancel()
    await asyncio.wait_for(asyncio.gather(holder, next_one), timeout=2)
    assert entered == ["holder", "next"] and gone.cancelled()


async def test_a_generation_that_waited_too_long_for_a_slot_is_shed() -> None:
    limiter = GenerationLimiter(max_running=1, max_waiting=4, retry_after_s=3, max_wait_s=0.025)
    release = asyncio.Event()

    async def hold() -> None:
        async with limiter.slot():
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    with pytest.raises(OverloadedError, match=r"no LLM slot came free in 0\.05 s") as shed:
        async with limiter.slot():
            pass
    assert shed.value.retry_after_s == 3
    release.set()
    await holder
    async with asyncio.timeout(1), limiter.slot():  # the slot was not lost
        pass


async def test_a_generation_that_would_wait_too_long_is_refused_at_once() -> None:
    """Once generations are known to take ~10 s, with a 25 s bound and one slot, the third one
    admitted would wait ~20 s and the fourth ~30 s: it is refused before it waits, with a
    Retry-After of about the time the queue takes to drain; what was admitted runs."""
    now = [0.0]
    limiter = GenerationLimiter(
        max_running=1, max_waiting=16, retry_after_s=2, max_wait_s=25, clock=lambda: now[0]
    )
    limiter.check()  # nothing known yet: only the count bounds the queue
    async with limiter.slot():
        now[0] += 10.0
    assert limiter.mean_generation_s == 10.0
    places = [limiter.admit() for _ in range(3)]
    assert limiter.expected_wait_s(limiter.admitted) == 30.0
    with pytest.raises(OverloadedError, match=r"would wait about 30 s") as shed:
        limiter.check()
    assert shed.value.retry_after_s == 30
    places.pop().release()
    limiter.check()  # 20 s ahead: admitted


def test_a_tenant_over_its_rate_is_refused_until_tokens_come_back() -> None:
    now = [100.0]
    bucket = TokenBucket(rate_per_s=0.5, burst=2, clock=lambda: now[0])
    bucket.take()
    bucket.take()
    with pytest.raises(RateLimitedError, match=r"more than 0\.5 requests per second") as refused:
        bucket.take()
    assert refused.value.retry_after_s == 2
    now[0] += 2.0  # one token back
    bucket.take()
    with pytest.raises(RateLimitedError):
        bucket.take()
    now[0] += 60.0  # never more than the burst
    bucket.take()
    bucket.take()
    with pytest.raises(RateLimitedError):
        bucket.take()
