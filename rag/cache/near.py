"""The near cache: a bounded in-process copy of the cache entries this process read or wrote
recently, in front of Redis, so hot answers keep flowing through Redis trouble.

``NearStore`` is a ``KVStore`` over another (the fail-open ``RedisGateway``), keyed by the same
keys and holding the same bytes:

- **Read first** for ``fresh_s`` (seconds) after an entry was copied: a hot question's entries are
  served without a Redis round trip.
- **Read when Redis is slow**: when every entry a read wants has a copy younger than ``keep_s``,
  Redis gets ``hedge_s`` (20 ms) to answer; past that the copies are served and Redis's answer,
  when it comes, only refreshes them. A stalled Redis then costs a hot question 20 ms, not the
  gateway's deadline.
- **Read when Redis fails it** for ``keep_s`` after the copy: Redis down, slow past its deadline,
  or answering that the entry is gone (a restart or a failover lost it, eviction took it). The
  copy is still right: keys are content-addressed and carry the corpus version, which lives in
  the vector store, so a copy can only be as stale as that version allows.
- **Written back when Redis lost its data**: every process shares a marker key in Redis; when
  a read finds an entry gone that the copy holds, the marker is looked at (once a second at
  most), and if it is gone or replaced (Redis restarted empty, rolled back, failed over or was
  flushed), copies read in the next ``keep_s`` are written back to Redis (TTL
  ``WRITE_BACK_TTL_S``), so hot entries outlive the copy instead of all turning into misses at
  once ``keep_s`` later. An entry merely deleted (a purge) leaves the marker alone and is never
  written back.
- **Purges reach it by pub/sub**: every explicit invalidation (an admin's, or a document change
  dropping its answers) is announced on ``NEAR_PURGE_CHANNEL`` and every process drops the same
  entries (all of them for an invalidation by layer or of everything). A process cut off from
  Redis when a purge is announced keeps serving what it holds for at most ``keep_s``: that is
  the bounded window of a partition.

Bounded by bytes (keys and values), least recently used first out. Redis's server-assisted
client-side caching (RESP3 ``CLIENT TRACKING``) is not used: it invalidates on every write of a
key and, by design, serves nothing while the server is unreachable, which is exactly when this
copy is needed; redis-py's ``CacheConfig`` also works only with its synchronous client."""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from rag.cache.gateway import RedisGateway

NEAR_PURGE_CHANNEL = "rag:near-purge"
EPOCH_KEY = "rag:near-epoch"  # a marker that disappears or changes when Redis loses its data
_EPOCH_TTL_MS = 30 * 24 * 3600 * 1000
_EPOCH_CHECK_S = 1.0
WRITE_BACK_TTL_S = 600  # shorter than every layer's TTL but for hours, not seconds


class NearCache:
    """Keys to (bytes, when copied); least recently used first out past ``max_bytes``."""

    def __init__(self, *, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, max_age_s: float) -> bytes | None:
        found = self._entries.get(key)
        if found is None or self._clock() - found[1] > max_age_s:
            return None
        self._entries.move_to_end(key)
        return found[0]

    def put(self, key: str, value: bytes) -> None:
        self.drop(key)
        size = len(key) + len(value)
        if size > self.max_bytes:
            return
        self._entries[key] = (value, self._clock())
        self.bytes += size
        while self.bytes > self.max_bytes:
            old_key, (old_value, _) = self._entries.popitem(last=False)
            self.bytes -= len(old_key) + len(old_value)

    def drop(self, *keys: str) -> None:
        for key in keys:
            found = self._entries.pop(key, None)
            if found is not None:
                self.bytes -= len(key) + len(found[0])

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def purge(self, keys: Sequence[str] | None) -> None:
        """Drop ``keys``, or everything when None (an invalidation by layer or of all)."""
        if keys is None:
            self.clear()
        else:
            self.drop(*keys)

    def on_purge_message(self, data: bytes) -> None:
        """A ``NEAR_PURGE_CHANNEL`` message: ``{"keys": [...] | null}``; anything else clears
        everything (a purge must never be missed for want of parsing it)."""
        try:
            keys = json.loads(data)["keys"]
            if keys is not None and not all(isinstance(key, str) for key in keys):
                raise TypeError("keys are not strings")
        except (ValueError, KeyError, TypeError):
            keys = None
        self.purge(keys)


class NearStore:
    """``KVStore``: the near cache in front of ``redis``."""

    def __init__(
        self,
        *,
        redis: RedisGateway,
        near: NearCache,
        fresh_s: float,
        keep_s: float,
        hedge_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self.near = near
        self._fresh_s = fresh_s
        self._keep_s = max(keep_s, fresh_s)
        self._hedge_s = hedge_s
        self._late: set[asyncio.Task[list[bytes | None]]] = set()  # reads the copies answered
        self._clock = clock
        self._epoch: bytes | None = None  # the marker's value when last looked at
        self._epoch_checked_at = -math.inf
        self._lost_at = -math.inf  # when Redis was last found to have lost its data

    @property
    def available(self) -> bool:
        return self._redis.available

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        values = [self.near.get(key, self._fresh_s) for key in keys]
        missing = [i for i, value in enumerate(values) if value is None]
        if not missing:
            return values  # no round trip
        wanted = [keys[i] for i in missing]
        kept = [self.near.get(key, self._keep_s) for key in wanted]
        if self._hedge_s and all(value is not None for value in kept):
            fetch = asyncio.ensure_future(self._redis.get_many(wanted))
            done, _ = await asyncio.wait({fetch}, timeout=self._hedge_s)
            if not done:  # Redis is slow: the copies now, Redis's answer refreshes them later
                self._late.add(fetch)
                fetch.add_done_callback(lambda task: self._refresh(wanted, task))
                for i, value in zip(missing, kept, strict=True):
                    values[i] = value
                return values
            fetched = fetch.result()
        else:
            fetched = await self._redis.get_many(wanted)
        lost: list[int] = []
        for i, raw in zip(missing, fetched, strict=True):
            if raw is not None:
                values[i] = raw
                self.near.put(keys[i], raw)
            else:  # gone from Redis, or Redis failed: the copy, if it is recent enough
                values[i] = self.near.get(keys[i], self._keep_s)
                if values[i] is not None and self._redis.available:
                    lost.append(i)
        if lost and await self.redis_lost_data():
            for i in lost:
                value = values[i]
                assert value is not None
                await self._redis.set(keys[i], value, WRITE_BACK_TTL_S)
        return values

    def _refresh(self, keys: list[str], fetch: asyncio.Task[list[bytes | None]]) -> None:
        """A late Redis answer (see ``get_many``): copy what it found."""
        self._late.discard(fetch)
        if fetch.cancelled() or fetch.exception() is not None:
            return
        for key, raw in zip(keys, fetch.result(), strict=True):
            if raw is not None:
                self.near.put(key, raw)

    async def redis_lost_data(self) -> bool:
        """Whether Redis lost its data in the last ``keep_s``: the shared marker was found gone
        or replaced (the first process to look sets a new one). Looks once a second at most."""
        now = self._clock()
        if now - self._epoch_checked_at >= _EPOCH_CHECK_S:
            self._epoch_checked_at = now
            epoch = await self._read_epoch()
            if epoch is not None:
                if self._epoch is not None and epoch != self._epoch:
                    self._lost_at = now
                self._epoch = epoch
        return now - self._lost_at <= self._keep_s

    async def _read_epoch(self) -> bytes | None:
        """The marker's value, set first if it is absent; None when Redis did not answer."""
        mine = secrets.token_hex(8)
        acquired = await self._redis.acquire(EPOCH_KEY, mine, _EPOCH_TTL_MS)
        if acquired is None:
            return None
        if acquired:
            return mine.encode()
        return (await self._redis.get_many([EPOCH_KEY]))[0]

    async def set(self, key: str, value: bytes, ttl_s: int) -> bool:
        self.near.put(key, value)  # served from here even if Redis refuses the write
        return await self._redis.set(key, value, ttl_s)

    async def delete(self, *keys: str) -> int:
        self.near.drop(*keys)
        return await self._redis.delete(*keys)

    async def repair(self, key: str) -> None:
        await self._redis.repair(key)

    async def follow_purges(self) -> None:
        """Clear the copy whenever an invalidation is announced, until cancelled."""
        await self._redis.subscribe(NEAR_PURGE_CHANNEL, self.near.on_purge_message)
