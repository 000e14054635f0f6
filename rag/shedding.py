"""Load shedding.

- LLM generations: a bounded number run at once and a bounded number wait for a slot; past that a
  new generation is refused at once (``OverloadedError``, a 503 with ``Retry-After``) instead of
  joining an unbounded queue. Requests served from a cache, and requests that follow an identical
  generation already running, never need a slot. A freed slot goes to the waiting generation the
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
    def __init__(
        self, *, max_running: int, max_waiting: int, retry_after_s: int, max_wait_s: float = 30.0
    ) -> None:
        self._free = max_running
        self._max_wait_s = max_wait_s
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
        """``OverloadedError`` when every place is taken (and a new generation would be shed)."""
        if self.admitted >= self.capacity:
            raise self._overloaded(f"{self.capacity} answers are being generated or wait")

    def _overloaded(self, why: str) -> OverloadedError:
        return OverloadedError(
            f"too many answers are being generated ({why}); retry in {self.retry_after_s} s",
            retry_after_s=self.retry_after_s,
        )

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
                async with asyncio.timeout(self._max_wait_s):
                    await granted
            except (TimeoutError, asyncio.CancelledError) as exc:
                if entry in self._waiting:
                    self._waiting.remove(entry)
                elif not granted.cancelled():
                    self._hand_on()  # granted just as it gave up: pass the slot on
                if isinstance(exc, TimeoutError):
                    raise self._overloaded(
                        f"no LLM slot came free in {self._max_wait_s:g} s"
                    ) from None
                raise
        try:
            yield
        finally:
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
