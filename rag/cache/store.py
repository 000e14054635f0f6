"""The cache store: ``redis.asyncio`` against Redis, Valkey, the embedded Valkey or a Redis Cluster.

It fails open. A command that errors or times out is logged, reads as a miss and drops the write,
and the store then skips Redis for ``retry_after_s`` (a small circuit breaker) so that requests do
not each wait on a dead server; the first command after that window probes it again."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from rag.cache.connect import REDIS_ERRORS, RedisClient
from rag.cache.connect import get_many as redis_get_many

log = logging.getLogger(__name__)
T = TypeVar("T")


class RedisStore:
    """``KVStore`` over one ``redis.asyncio`` client, single server or cluster (passed in; this
    class does not own it)."""

    def __init__(
        self, *, client: RedisClient, timeout_s: float, retry_after_s: float = 1.0
    ) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._retry_after_s = retry_after_s
        self._closed_until = 0.0  # monotonic time before which Redis is not tried
        self.available = True
        self.round_trips = 0  # commands or pipelines sent; read by the benchmark

    async def _call(self, what: str, op: Callable[[], Awaitable[T]], fallback: T) -> T:
        if time.monotonic() < self._closed_until:
            return fallback
        self.round_trips += 1
        try:
            async with asyncio.timeout(self._timeout_s):  # no extra task, unlike wait_for
                result = await op()
        except REDIS_ERRORS as exc:
            if self.available:
                log.warning("cache store unavailable (%s: %r); serving without cache", what, exc)
            self.available = False
            self._closed_until = time.monotonic() + self._retry_after_s
            return fallback
        if not self.available:
            log.info("cache store reachable again")
            self.available = True
        return result

    async def ping(self) -> bool:
        async def op() -> bool:
            return bool(await self._client.ping())

        return await self._call("ping", op, False)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []

        async def op() -> list[bytes | None]:
            # One MGET: cheaper than a pipeline of GETs. On a cluster, one MGET per slot.
            return await redis_get_many(self._client, keys)

        return await self._call("get", op, [None] * len(keys))

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        if ttl_s <= 0:
            raise ValueError("every cache write needs a positive TTL")

        async def op() -> None:
            await self._client.set(key, value, ex=ttl_s)

        await self._call("set", op, None)

    async def set_if_absent(self, key: str, value: bytes, ttl_s: int) -> bytes | None:
        if ttl_s <= 0:
            raise ValueError("every cache write needs a positive TTL")

        async def op() -> bytes | None:
            # SET NX GET (Redis >= 7) is not in 6.2; a pipeline of SET NX + GET is just as atomic
            # for our purpose: whoever won, GET returns the value that is stored now.
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(key, value, ex=ttl_s, nx=True)
                pipe.get(key)
                _, current = await pipe.execute()
            return current  # type: ignore[no-any-return]

        return await self._call("set_if_absent", op, None)

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0

        async def op() -> int:
            return int(await self._client.delete(*keys))

        return await self._call("delete", op, 0)
