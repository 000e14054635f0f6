"""Load shedding.

- LLM generations: a bounded number run at once and a bounded number wait for a slot; past that,
  or when the generations ahead would keep a new one waiting longer than ``max_wait_s`` (their
  count times the recent mean generation time), a new generation is refused at once
  (``OverloadedError``, a 503 with a ``Retry-After`` of about the time the queue takes to drain)
  instead of joining a queue it would time out in. What is admitted is expected to finish.
  Requests served from a cache, and requests that follow an identical generation already
  running, never need a slot. A freed slot goes to the waiting generation the
  most requests wait for: after the cache was lost, a hot question is answered again first.
- Tenants: a token bucket per tenant bounds its request rate (``RateLimitedError``, a 429)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable

from rag.errors import OverloadedError, RateLimitedError


class Admission:
    """One admitted generation's place; released once, when its request is done with it."""

    def __init__(self, limiter: GenerationLimiter) -> None:
        self._limiter: GenerationLimiter | None = limiter

    def release(self) -> None:
        if self._limiter is not None:
            self._limiter.admitted -= 1
            self._limiter = None


class GenerationLimiter:
    # weight of the newest generation in the running mean of generation times
    _MEAN_WEIGHT = 0.2
    # an admitted generation gives up waiting for a slot after this many times max_wait_s
    _WAIT_LIMIT_FACTOR = 2

    def __init__(
        self,
        *,
        max_running: int,
        max_waiting: int,
        retry_after_s: int,
        max_wait_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._free = self._max_running = max_running
        self._max_wait_s = max_wait_s
        self._clock = clock
        self.mean_generation_s: float | None = None  # none until a generation held a slot
        # (how many requests wait for it, woken when granted a slot), oldest first
        self._waiting: list[tuple[Callable[[], int], asyncio.Future[None]]] = []
        self.capacity = max_running + max_waiting
        self.retry_after_s = retry_after_s
        self.admitted = 0  # running or waiting for a slot

    def admit(self) -> Admission:
        """A place for one more generation, or ``OverloadedError`` when all are taken."""
        self.check()
        self.admitted += 1
        return Admission(self)

    def check(self) -> None:
        """``OverloadedError`` when every place is taken, or when a new generation would wait
        longer than ``max_wait_s`` for a slot (and would be shed)."""
        if self.admitted >= self.capacity:
            raise self._overloaded(f"{self.capacity} answers are being generated or wait")
        wait_s = self.expected_wait_s(self.admitted)
        if wait_s > self._max_wait_s:
            raise self._overloaded(f"a new one would wait about {wait_s:.0f} s for the LLM")

    def expected_wait_s(self, ahead: int) -> float:
        """How long a generation with ``ahead`` admitted generations before it would wait for
        a slot: the rounds of ``max_running`` it waits behind, at the mean generation time."""
        if self.mean_generation_s is None or self._max_running == 0:
            return 0.0
        return (ahead // self._max_running) * self.mean_generation_s

    def _overloaded(self, why: str) -> OverloadedError:
        # retry once what is admitted now is about done: no sooner than the configured pause
        drain_s = self.expected_wait_s(self.admitted)
        retry_after_s = max(self.retry_after_s, math.ceil(drain_s))
        return OverloadedError(
            f"too many answers are being generated ({why}); retry in {retry_after_s} s",
            retry_after_s=retry_after_s,
        )

    def _observe(self, seconds: float) -> None:
        if self.mean_generation_s is None:
            self.mean_generation_s = seconds
        else:
            weight = self._MEAN_WEIGHT
            self.mean_generation_s = (1 - weight) * self.mean_generation_s + weight * seconds

    @contextlib.asynccontextmanager
    async def slot(self, demand: Callable[[], int] = lambda: 1) -> AsyncIterator[None]:
        """Hold one of the running slots for the block, waiting for one if needed. ``demand``
        tells how many requests wait for this generation when a slot is handed out."""
        if self._free and not self._waiting:
            self._free -= 1
        else:
            granted = asyncio.get_running_loop().create_future()
            entry = (demand, granted)
            self._waiting.append(entry)
            try:
                # admitted ones are expected to wait at most max_wait_s; this is the safety net
                async with asyncio.timeout(self._WAIT_LIMIT_FACTOR * self._max_wait_s):
                    await granted
            except (TimeoutError, asyncio.CancelledError) as exc:
                if entry in self._waiting:
                    self._waiting.remove(entry)
                elif not granted.cancelled():
                    self._hand_on()  # granted just as it gave up: pass the slot on
                if isinstance(exc, TimeoutError):
                    raise self._overloaded(
                        f"no LLM slot came free in {self._WAIT_LIMIT_FACTOR * self._max_wait_s:g} s"
                    ) from None
                raise
        started = self._clock()
        try:
            yield
        finally:
            self._observe(self._clock() - started)
            self._hand_on()

    def _hand_on(self) -> None:
        """A slot was freed: to the waiter the most requests wait for (the oldest on a tie)."""
        while self._waiting:
            best = max(self._waiting, key=lambda entry: entry[0]())
            self._waiting.remove(best)
            if not best[1].done():  # not cancelled a moment ago
                best[1].set_result(None)
                return
        self._free += 1


class TokenBucket:
    """Requests per second per tenant: each request takes a token; tokens come back at
    ``rate_per_s`` up to ``burst``. In this process only (each worker allows the rate)."""

    def __init__(
        self, *, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate, self._burst, self._clock = rate_per_s, float(burst), clock
        self._tokens, self._at = float(burst), clock()

    def take(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            retry_after_s = max(1, math.ceil((1 - self._tokens) / self._rate))
            raise RateLimitedError(
                f"this API key made more than {self._rate:g} requests per second "
                f"(bursts of {self._burst:.0f}); retry in {retry_after_s} s",
                retry_after_s=retry_after_s,
            )
        self._tokens -= 1
