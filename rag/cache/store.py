"""The two ways this library talks to Redis (Redis, Valkey, the embedded Valkey or a Cluster).

``RedisStore`` is the one *fail-open* client: every Redis call on the request path (cache reads
and writes, locks, the answer relay, tags, pub/sub announcements) goes through ``RedisStore.run``.
A call that errors or passes its deadline is logged (once per outage) and returns the caller's
fallback. A refused or broken connection opens a small circuit breaker at once: Redis is skipped
for ``retry_after_s`` so that requests do not each wait on a dead server, and the first call after
that window probes it again. A deadline passed opens it only after ``timeouts_to_open`` in a row:
on a busy machine one late answer is the event loop's lag more often than Redis's, and skipping
the cache for a second would send every request of that second to the LLM.
Callers never see a Redis exception: a slow or dead Redis means misses and no coordination, never
a 500 or a cut stream.

``StrictStore`` is for the session store, which is the source of truth: the same deadline, but a
failure raises ``CacheUnavailableError`` (a 503), since silently forgetting a conversation would
be wrong."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rag.cache.connect import REDIS_ERRORS, RedisClient
from rag.cache.connect import get_many as redis_get_many
from rag.errors import CacheUnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")
Op = Callable[[RedisClient], Awaitable[T]]


class RedisStore:
    """``KVStore`` over one ``redis.asyncio`` client, single server or cluster (passed in; this
    class does not own it), and the fail-open gateway for every other Redis call."""

    def __init__(
        self,
        *,
        client: RedisClient,
        timeout_s: float,
        retry_after_s: float = 1.0,
        timeouts_to_open: int = 3,
    ) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self._retry_after_s = retry_after_s
        self._timeouts_to_open = timeouts_to_open
        self._timeouts = 0  # deadlines passed in a row
        self._closed_until = 0.0  # monotonic time before which Redis is not tried
        self.available = True
        self.round_trips = 0  # commands or pipelines sent; read by the benchmark

    async def run(self, what: str, op: Op[T], fallback: T, *, timeout_s: float | None = None) -> T:
        """``op(client)`` within the deadline, or ``fallback`` if Redis fails, is slow, or the
        breaker is open. ``timeout_s`` overrides the deadline (a blocking read needs longer)."""
        if time.monotonic() < self._closed_until:
            return fallback
        self.round_trips += 1
        try:
            async with asyncio.timeout(timeout_s or self.timeout_s):  # no extra task
                result = await op(self.client)
        except ResponseError as exc:  # Redis answered: the data is wrong (WRONGTYPE), not Redis
            log.warning("cache store refused %s: %s", what, exc)
            return fallback
        except REDIS_ERRORS as exc:
            if self.available:
                log.warning("cache store unavailable (%s: %r); serving without cache", what, exc)
            self.available = False
            timed_out = isinstance(exc, TimeoutError | RedisTimeoutError)
            self._timeouts = self._timeouts + 1 if timed_out else self._timeouts_to_open
            if self._timeouts >= self._timeouts_to_open:
                self._closed_until = time.monotonic() + self._retry_after_s
            return fallback
        self._timeouts = 0
        if not self.available:
            log.info("cache store reachable again")
            self.available = True
        return result

    async def ping(self) -> bool:
        async def op(client: RedisClient) -> bool:
            return bool(await client.ping())

        return await self.run("ping", op, False)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []

        async def op(client: RedisClient) -> list[bytes | None]:
            # One MGET: cheaper than a pipeline of GETs. On a cluster, one MGET per slot.
            return await redis_get_many(client, keys)

        return await self.run("get", op, [None] * len(keys))

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        if ttl_s <= 0:
            raise ValueError("every cache write needs a positive TTL")

        async def op(client: RedisClient) -> None:
            await client.set(key, value, ex=ttl_s)

        await self.run("set", op, None)

    async def set_if_absent(self, key: str, value: bytes, ttl_s: int) -> bytes | None:
        if ttl_s <= 0:
            raise ValueError("every cache write needs a positive TTL")

        async def op(client: RedisClient) -> bytes | None:
            # SET NX GET (Redis >= 7) is not in 6.2; a pipeline of SET NX + GET is just as atomic
            # for our purpose: whoever won, GET returns the value that is stored now.
            async with client.pipeline(transaction=True) as pipe:
                pipe.set(key, value, ex=ttl_s, nx=True)
                pipe.get(key)
                _, current = await pipe.execute(raise_on_error=False)
            if isinstance(current, ResponseError):  # a key of another type: no usable value
                return b""
            return current  # type: ignore[no-any-return]

        return await self.run("set_if_absent", op, None)

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0

        async def op(client: RedisClient) -> int:
            return int(await client.delete(*keys))

        return await self.run("delete", op, 0)

    async def publish(self, channel: str, message: str) -> None:
        async def op(client: RedisClient) -> None:
            await client.publish(channel, message)

        await self.run("publish", op, None)


class StrictStore:
    """Redis calls whose failure is an error: a ``CacheUnavailableError`` within the deadline."""

    def __init__(self, *, client: RedisClient, timeout_s: float) -> None:
        self.client = client
        self._timeout_s = timeout_s

    async def run(self, what: str, op: Op[T]) -> T:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await op(self.client)
        except REDIS_ERRORS as exc:
            raise CacheUnavailableError(
                f"the {what} (Redis) is unreachable: {type(exc).__name__}"
            ) from exc
