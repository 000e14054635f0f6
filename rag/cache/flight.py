"""Single-flight: N concurrent identical misses cause one upstream call, in one process or
across processes sharing Redis.

In one process, followers await the leader's future. Across processes, the leader holds a Redis
lock (``SET NX PX`` with an owner token, extended by a heartbeat while it works, released by a
compare-and-delete script so a lock that expired and was taken over is never deleted by its old
owner). Waiters are woken by a pub/sub message when the leader finishes, with a bounded poll as
fallback; when the holder dies its lock expires and a waiter takes over. A leader's failure is
announced, so followers fail at once with its message instead of retrying one after another.
Waiting is bounded and ends in ``FlightTimeoutError``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from rag.aio import finish_even_if_cancelled
from rag.cache.gateway import RedisGateway
from rag.cache.keys import flight_done_channel, flight_key
from rag.errors import FlightFailedError, FlightTimeoutError, RagError

log = logging.getLogger(__name__)
T = TypeVar("T")


class RedisLock:
    """A lock with an owner token: acquired with ``SET NX PX``, kept alive by a heartbeat while
    held, and released only by its owner (compare-and-delete), so a lock that expired and was
    taken over is never deleted by its old owner. Every call fails open (``RedisGateway``)."""

    def __init__(self, redis: RedisGateway, name: str, ttl_s: float) -> None:
        self._redis = redis
        self.name = name
        self._ttl_ms = int(ttl_s * 1000)
        self._token = secrets.token_hex(8)

    async def acquire(self) -> bool | None:
        """True: acquired; False: someone holds it; None: Redis did not answer (no coordination)."""
        return await self._redis.acquire(self.name, self._token, self._ttl_ms)

    async def exists(self) -> bool | None:
        """Whether someone holds it; None when Redis did not answer."""
        return await self._redis.exists(self.name)

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Keep the (acquired) lock alive for the block, then release it."""
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            yield
        finally:
            heartbeat.cancel()
            await finish_even_if_cancelled(self._redis.release(self.name, self._token))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._ttl_ms / 3000)
            if await self._redis.extend(self.name, self._token, self._ttl_ms) is False:
                log.warning("lost the lock %s while holding it", self.name)
                return


class SingleFlight:
    def __init__(
        self,
        *,
        store: RedisGateway | None,
        namespace: str,
        lock_ttl_s: float,
        wait_s: float,
        poll_s: float = 0.5,
    ) -> None:
        self._store = store  # None: coalesce within this process only
        self._lock_ttl_s = lock_ttl_s
        self._wait_s = wait_s
        self._poll_s = poll_s
        self.channel = flight_done_channel(namespace)
        self._namespace = namespace
        self._local: dict[str, asyncio.Future[Any]] = {}
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._failures: dict[str, str] = {}  # key -> leader's error, kept briefly for waiters

    # -- the public call ------------------------------------------------------------------

    async def run(
        self,
        key: str,
        read: Callable[[], Awaitable[T | None]],
        compute: Callable[[], Awaitable[T]],
    ) -> T:
        """The value for ``key``: from ``read`` if it lands while waiting, else from ``compute``
        (which must also write it where ``read`` finds it), run once per key at a time."""
        while True:
            local = self._local.get(key)
            if local is None:
                break
            try:
                return await asyncio.shield(local)
            except asyncio.CancelledError:
                if local.cancelled():  # the local leader's client went away: go again
                    continue
                raise
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._local[key] = future
        try:
            result = await self._across_processes(key, read, compute)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning without followers
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._local[key]

    async def once_in_a_while(self, key: str, refresh: Callable[[], Awaitable[object]]) -> None:
        """Run ``refresh`` unless another process is refreshing ``key`` right now (it holds the
        refresh lock); nobody waits for it."""
        if self._store is None:
            await refresh()
            return
        lock = RedisLock(self._store, flight_key(self._namespace, key, "refresh"), self._lock_ttl_s)
        if await lock.acquire():  # None (Redis down): no cache to refresh, skip
            async with lock.held():
                await refresh()

    # -- across processes -----------------------------------------------------------------

    async def _across_processes(
        self,
        key: str,
        read: Callable[[], Awaitable[T | None]],
        compute: Callable[[], Awaitable[T]],
    ) -> T:
        if self._store is None:
            return await compute()
        lock = RedisLock(self._store, flight_key(self._namespace, key, "lock"), self._lock_ttl_s)
        deadline = time.monotonic() + self._wait_s
        while True:
            acquired = await lock.acquire()
            if acquired is None:
                return await compute()  # fail open: no coordination across processes
            if acquired:
                return await self._lead(key, lock, compute)
            event = asyncio.Event()
            self._watchers.setdefault(key, set()).add(event)
            try:
                value = await read()  # it may have landed before we started watching
                if value is not None:
                    return value
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(self._poll_s, deadline - time.monotonic())):
                        await event.wait()
                if key in self._failures:
                    raise FlightFailedError(self._failures[key])
                value = await read()
                if value is not None:
                    return value
            finally:
                watchers = self._watchers.get(key, set())
                watchers.discard(event)
                if not watchers:
                    self._watchers.pop(key, None)
            if time.monotonic() >= deadline:
                raise FlightTimeoutError(
                    f"waited {self._wait_s:.0f} s for an identical request in flight"
                )
            # no value yet: loop and try the lock again (taking over if its holder died)

    async def _lead(self, key: str, lock: RedisLock, compute: Callable[[], Awaitable[T]]) -> T:
        error: str | None = None
        try:
            async with lock.held():
                return await compute()
        except RagError as exc:
            error = str(exc)
            raise
        finally:
            assert self._store is not None
            message = json.dumps({"key": key, "error": error})
            await finish_even_if_cancelled(self._store.publish(self.channel, message))

    # -- waking waiters -------------------------------------------------------------------

    def _on_message(self, data: bytes) -> None:
        try:
            message = json.loads(data)
            key, error = str(message["key"]), message.get("error")
        except (ValueError, KeyError, TypeError):
            return
        if error is not None and key in self._watchers:
            self._failures[key] = str(error)
            asyncio.get_running_loop().call_later(self._poll_s * 4, self._failures.pop, key, None)
        for event in self._watchers.get(key, ()):
            event.set()

    async def run_listener(self) -> None:
        """Receive 'done' messages until cancelled; waiters fall back to polling meanwhile."""
        if self._store is not None:
            await self._store.subscribe(self.channel, self._on_message)
