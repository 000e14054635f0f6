"""``RedisGateway``: every Redis command of the library (see the package's docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from rag.cache.gateway._client import (
    _APPEND_WITHIN_BUDGET,
    _COMPARE_AND_DELETE,
    _COMPARE_AND_EXPIRE,
    _RAISE_COUNTS,
    REDIS_ERRORS,
    Op,
    RedisClient,
    StreamBatches,
    _Breaker,
    _check_ttl,
    _count,
    _text,
    _wrong_type,
)
from rag.errors import CacheUnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")
_SCAN_BATCH = 500  # keys deleted or read per command while walking


class RedisGateway:
    """Every Redis command of the library, over one ``redis.asyncio`` client (single server or
    cluster; passed in, not owned). Fail-open; ``strict`` is the same gateway raising instead."""

    def __init__(
        self,
        *,
        client: RedisClient,
        timeout_s: float,
        retry_after_s: float = 1.0,
        timeouts_to_open: int = 3,
        strict: bool = False,
        purpose: str | None = None,
        breaker: _Breaker | None = None,
    ) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self._strict = strict
        self._purpose = purpose  # what a strict failure names: "the session store (Redis) …"
        self._breaker = breaker or _Breaker(retry_after_s, timeouts_to_open)

    def strict(self, purpose: str) -> RedisGateway:
        """The same commands for ``purpose`` (e.g. "session store"), raising
        ``CacheUnavailableError`` where this gateway falls back."""
        return RedisGateway(
            client=self.client,
            timeout_s=self.timeout_s,
            strict=True,
            purpose=purpose,
            breaker=self._breaker,
        )

    @property
    def available(self) -> bool:
        return self._breaker.available

    @available.setter
    def available(self, value: bool) -> None:
        self._breaker.available = value

    @property
    def round_trips(self) -> int:
        return self._breaker.round_trips

    # -- the policy ------------------------------------------------------------------------

    async def run(
        self,
        what: str,
        op: Op[T],
        fallback: T,
        *,
        timeout_s: float | None = None,
        repair: str | None = None,
    ) -> T:
        """``op(client)`` within the deadline, or ``fallback`` (strict: an error) if Redis
        fails, is slow, or the breaker is open. ``timeout_s`` overrides the deadline (a blocking
        read needs longer). ``repair``: the key ``op`` works on; if it holds a value of another
        type, it is deleted and ``op`` is sent once more."""
        breaker = self._breaker
        if time.monotonic() < breaker.closed_until:
            return self._fail(what, None, fallback)
        breaker.round_trips += 1
        try:
            async with asyncio.timeout(timeout_s or self.timeout_s):  # no extra task
                try:
                    result = await op(self.client)
                except ResponseError as exc:
                    if repair is None or not _wrong_type(exc):
                        raise
                    log.warning("deleting %s: it holds a value of another type", repair)
                    await self.client.delete(repair)
                    result = await op(self.client)
        except ResponseError as exc:  # Redis answered: the data or command is wrong, not Redis
            log.warning("cache store refused %s: %s", what, exc)
            return self._fail(what, exc, fallback)
        except REDIS_ERRORS as exc:
            breaker.failed(what, exc)
            return self._fail(what, exc, fallback)
        breaker.succeeded()
        return result

    def _fail(self, what: str, exc: BaseException | None, fallback: T) -> T:
        if not self._strict:
            return fallback
        reason = type(exc).__name__ if exc is not None else "it failed a moment ago"
        raise CacheUnavailableError(
            f"the {self._purpose or what} (Redis) is unreachable: {reason}"
        ) from exc

    # -- plain values ----------------------------------------------------------------------

    async def ping(self) -> bool:
        async def op(client: RedisClient) -> bool:
            return bool(await client.ping())

        return await self.run("ping", op, False)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values of ``keys`` in order (a key of another type reads as absent). One MGET on a
        single server; on a cluster one MGET per slot in one pipeline (not atomic across slots,
        which a cache does not need)."""
        if not keys:
            return []

        async def op(client: RedisClient) -> list[bytes | None]:
            if isinstance(client, RedisCluster):
                return cast(list[bytes | None], await client.mget_nonatomic(list(keys)))
            # The command itself, not ``client.mget``: redis-py 8 wraps ``mget`` in a deprecation
            # check that inspects its arguments on every call, a tenth of a hit's CPU time.
            return cast(list[bytes | None], await client.execute_command("MGET", *keys))  # type: ignore[no-untyped-call]

        return await self.run("get", op, [None] * len(keys))

    async def set(self, key: str, value: bytes, ttl_s: int) -> bool:
        """Whether the value was written."""
        _check_ttl(ttl_s)

        async def op(client: RedisClient) -> bool:
            await client.set(key, value, ex=ttl_s)  # SET replaces a value of any type
            return True

        return await self.run("set", op, False)

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0

        async def op(client: RedisClient) -> int:
            return int(await client.delete(*keys))

        return await self.run("delete", op, 0)

    async def repair(self, key: str) -> None:
        """Delete ``key`` if it holds something other than a string: MGET reads such a key as
        absent, so a layer that does not write it after a miss would miss on it forever."""

        async def op(client: RedisClient) -> None:
            await _delete_if_not_a_string(client, key)

        await self.run("repair", op, None)

    # -- locks (owner token) -----------------------------------------------------------------

    async def acquire(self, name: str, token: str, ttl_ms: int) -> bool | None:
        """True: acquired; False: held by someone; None: Redis did not answer."""

        async def op(client: RedisClient) -> bool:
            if await client.set(name, token, nx=True, px=ttl_ms):
                return True
            # Held, or a value of another type that would hold it forever: repair and retry.
            if await _delete_if_not_a_string(client, name):
                return bool(await client.set(name, token, nx=True, px=ttl_ms))
            return False

        return await self.run("lock", op, None)

    async def exists(self, key: str) -> bool | None:
        async def op(client: RedisClient) -> bool:
            return bool(await client.exists(key))

        return await self.run("exists", op, None)

    async def release(self, name: str, token: str) -> None:
        """Delete the lock only if ``token`` still owns it."""
        await self._script(_COMPARE_AND_DELETE, [name], [token])

    async def extend(self, name: str, token: str, ttl_ms: int) -> bool | None:
        """Extend the lock if ``token`` still owns it: False when it was lost."""
        result = await self._script(_COMPARE_AND_EXPIRE, [name], [token, ttl_ms])
        return None if result is None else result != 0

    async def _script(self, script: str, keys: list[str], args: list[Any]) -> object:
        async def op(client: RedisClient) -> object:
            return await client.eval(script, len(keys), *keys, *args)

        return await self.run("script", op, None, repair=keys[0])

    # -- streams (the answer relay) ------------------------------------------------------------

    async def stream_add(
        self, stream: str, entry_id: str, fields: Mapping[str, str], *, ttl_s: int | None = None
    ) -> None:
        """Append one entry under an explicit id; with ``ttl_s``, (re)set the stream's TTL."""

        async def op(client: RedisClient) -> None:
            async with client.pipeline(transaction=False) as pipe:
                pipe.xadd(stream, dict(fields), id=entry_id)  # type: ignore[arg-type]
                if ttl_s is not None:
                    pipe.expire(stream, ttl_s)
                await pipe.execute()

        await self.run("relay", op, None, repair=stream)

    async def stream_read(
        self, stream: str, after: bytes | str, block_s: float
    ) -> StreamBatches | None:
        """Entries after ``after``, waiting up to ``block_s`` for one; None when the read
        failed or came late."""

        async def op(client: RedisClient) -> StreamBatches:
            found = await client.xread({stream: after}, count=256, block=int(block_s * 1000))
            return cast(StreamBatches, found or [])

        # a blocking read may take its whole block time on top of the usual deadline
        return await self.run("relay", op, None, timeout_s=self.timeout_s + block_s)

    # -- sorted sets (tags) ---------------------------------------------------------------------

    async def add_expiring(
        self, sets: Sequence[str], member: str, expires_at: float, ttl_s: int
    ) -> None:
        """Add ``member`` to each sorted set scored by its expiry time, prune members that have
        expired, and give each set ``ttl_s`` again. A set of another type is replaced."""
        _check_ttl(ttl_s)
        now = time.time()

        async def op(client: RedisClient) -> None:
            async with client.pipeline(transaction=False) as pipe:
                for key in sets:
                    pipe.zadd(key, {member: expires_at})
                    pipe.zremrangebyscore(key, "-inf", now)
                    pipe.expire(key, ttl_s)
                results = await pipe.execute(raise_on_error=False)
            wrong = {k for k, r in zip(sets, results[::3], strict=True) if _wrong_type(r)}
            if wrong:
                log.warning("deleting %s: they hold values of another type", sorted(wrong))
                await client.delete(*wrong)
                await op(client)  # once: the keys are free now

        await self.run("tag", op, None)

    async def live_members(self, key: str) -> list[str]:
        """Members of a sorted set scored by expiry time that have not expired."""

        async def op(client: RedisClient) -> list[str]:
            return [_text(m) for m in await client.zrangebyscore(key, time.time(), "+inf")]

        return await self.run("tag", op, [], repair=key)

    # -- hashes of counts (semantic outcomes) ---------------------------------------------------

    async def add_counts(self, key: str, increments: Mapping[str, int], ttl_s: int) -> bool:
        """Add ``increments`` to the hash's fields and give it ``ttl_s`` again, in one round
        trip; whether Redis took it. A key of another type is replaced."""
        _check_ttl(ttl_s)

        async def op(client: RedisClient) -> bool:
            async with client.pipeline(transaction=False) as pipe:
                for field, amount in increments.items():
                    pipe.hincrby(key, field, amount)
                pipe.expire(key, ttl_s)
                await pipe.execute()
            return True

        return await self.run("count", op, False, repair=key)

    async def raise_counts(self, key: str, floors: Mapping[str, int], ttl_s: int) -> bool:
        """Raise the hash's fields to at least ``floors`` and give it ``ttl_s`` again; whether
        Redis took it."""
        _check_ttl(ttl_s)
        args = [x for field, floor in floors.items() for x in (field, floor)]
        return await self._script(_RAISE_COUNTS, [key], [*args, ttl_s]) is not None

    async def counts(self, key: str) -> dict[str, int]:
        """A hash of counts; a field that is not a whole number reads as 0."""

        async def op(client: RedisClient) -> dict[str, int]:
            raw = await client.hgetall(key)
            return {_text(field): _count(value) for field, value in raw.items()}

        return await self.run("count", op, {}, repair=key)

    # -- lists (sessions) -------------------------------------------------------------------------

    async def list_items(self, key: str) -> tuple[list[bytes], int]:
        """The items of a list and its TTL in seconds (0 when absent)."""

        async def op(client: RedisClient) -> tuple[list[bytes], int]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.lrange(key, 0, -1)
                pipe.ttl(key)
                items, ttl = await pipe.execute()
            return list(items), max(int(ttl), 0)

        return await self.run("list", op, ([], 0), repair=key)

    async def append_within_budget(self, key: str, item: str, budget: int, ttl_s: int) -> int:
        """Append a JSON ``item`` with a ``tokens`` field; drop the oldest while the list's
        tokens exceed ``budget``; reset the TTL. Returns how many items are kept."""
        _check_ttl(ttl_s)
        kept = await self._script(_APPEND_WITHIN_BUDGET, [key], [item, budget, ttl_s])
        return int(cast(int, kept or 0))

    # -- walking and announcing ------------------------------------------------------------

    async def scan(self, pattern: str) -> AsyncIterator[list[str]]:
        """Keys matching ``pattern`` in batches (every primary of a cluster). Errors propagate
        (wrapped when strict): a walk is not on the request path."""
        batch: list[str] = []
        try:
            async for key in self.client.scan_iter(match=pattern, count=1000):
                batch.append(_text(key))
                if len(batch) == _SCAN_BATCH:
                    yield batch
                    batch = []
        except REDIS_ERRORS as exc:
            self._fail("scan", exc, None)
            raise
        if batch:
            yield batch

    async def publish(self, channel: str, message: str) -> None:
        async def op(client: RedisClient) -> None:
            await client.publish(channel, message)

        await self.run("publish", op, None)

    async def subscribe(
        self,
        channel: str,
        on_message: Callable[[bytes], None],
        *,
        on_subscribed: Callable[[], Awaitable[None]] | None = None,
        on_lost: Callable[[BaseException], None] | None = None,
        on_tick: Callable[[], None] | None = None,
        retry_s: float = 1.0,
    ) -> None:
        """Deliver ``channel``'s messages until cancelled, resubscribing after an outage.
        ``on_subscribed`` runs after each (re)subscription (messages sent while disconnected are
        lost: reload what they described), ``on_lost`` when the subscription breaks, ``on_tick``
        about once a second."""
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(channel)
                if on_subscribed is not None:
                    await on_subscribed()
                me = asyncio.current_task()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if me is not None and me.cancelling():
                        # redis-py's read timeout can swallow a cancellation that lands with it
                        raise asyncio.CancelledError
                    if message is not None:
                        on_message(message["data"])
                    if on_tick is not None:
                        on_tick()
            except REDIS_ERRORS as exc:
                if on_lost is not None:
                    on_lost(exc)
                await asyncio.sleep(retry_s)
            finally:
                with contextlib.suppress(*REDIS_ERRORS):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    async def used_memory(self) -> int:
        """The server's ``used_memory`` (for measurements; errors propagate)."""
        return int((await self.client.info("memory"))["used_memory"])

    async def memory_usage(self, keys: Sequence[str]) -> list[int | None]:
        """``MEMORY USAGE`` of each key (None: gone), in one pipeline (for measurements)."""
        if not keys:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.memory_usage(key, samples=0)
            return [None if size is None else int(size) for size in await pipe.execute()]

    async def config(self, pattern: str) -> dict[str, str] | None:
        """Server settings matching ``pattern``; None when CONFIG is refused or Redis is down
        (managed services often forbid it)."""
        try:
            found = await self.client.config_get(pattern)
        except REDIS_ERRORS:
            return None
        return {_text(k): _text(v) for k, v in found.items()}


async def _delete_if_not_a_string(client: RedisClient, key: str) -> bool:
    """Whether ``key`` held a value of another type (now deleted)."""
    if _text(await client.type(key)) in ("string", "none"):
        return False
    log.warning("deleting %s: it holds a value of another type", key)
    await client.delete(key)
    return True
