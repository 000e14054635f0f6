"""Load shedding for LLM generations: a bounded number run at once and a bounded number wait for
a slot; past that a new generation is refused at once (``OverloadedError``, a 503 with
``Retry-After``) instead of joining an unbounded queue. Requests served from a cache, and requests
that follow an identical generation already running, never need a slot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from rag.errors import OverloadedError


class Admission:
    """One admitted generation's place; released once, when its request is done with it."""

    def __init__(self, limiter: GenerationLimiter) -> None:
        self._limiter: GenerationLimiter | None = limiter

    def release(self) -> None:
        if self._limiter is not None:
            self._limiter.admitted -= 1
            self._limiter = None


class GenerationLimiter:
    def __init__(self, *, max_running: int, max_waiting: int, retry_after_s: int) -> None:
        self._slots = asyncio.Semaphore(max_running)
        self.capacity = max_running + max_waiting
        self.retry_after_s = retry_after_s
        self.admitted = 0  # running or waiting for a slot

    def admit(self) -> Admission:
        """A place for one more generation, or ``OverloadedError`` when all are taken."""
        if self.admitted >= self.capacity:
            raise OverloadedError(
                f"too many answers are being generated ({self.capacity} running or waiting); "
                f"retry in {self.retry_after_s} s",
                retry_after_s=self.retry_after_s,
            )
        self.admitted += 1
        return Admission(self)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the running slots (waiting for one if needed) for the block."""
        async with self._slots:
            yield
