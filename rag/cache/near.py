"""The near cache: a bounded in-process copy of the cache entries this process read or wrote
recently, in front of Redis, so hot answers keep flowing through Redis trouble.

``NearStore`` is a ``KVStore`` over another (the fail-open ``RedisGateway``), keyed by the same
keys and holding the same bytes:

- **Read first** for ``fresh_s`` (seconds) after an entry was copied: a hot question's entries are
  served without a Redis round trip.
- **Read when Redis fails it** for ``keep_s`` after the copy: Redis down, slow past its deadline,
  or answering that the entry is gone (a restart or a failover lost it, eviction took it). The
  copy is still right: keys are content-addressed and carry the corpus version, which lives in
  the vector store, so a copy can only be as stale as that version allows.
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

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from rag.cache.gateway import RedisGateway

NEAR_PURGE_CHANNEL = "rag:near-purge"


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
        self, *, redis: RedisGateway, near: NearCache, fresh_s: float, keep_s: float
    ) -> None:
        self._redis = redis
        self.near = near
        self._fresh_s = fresh_s
        self._keep_s = max(keep_s, fresh_s)

    @property
    def available(self) -> bool:
        return self._redis.available

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        values = [self.near.get(key, self._fresh_s) for key in keys]
        missing = [i for i, value in enumerate(values) if value is None]
        if not missing:
            return values  # no round trip
        fetched = await self._redis.get_many([keys[i] for i in missing])
        for i, raw in zip(missing, fetched, strict=True):
            if raw is not None:
                values[i] = raw
                self.near.put(keys[i], raw)
            else:  # gone from Redis, or Redis failed: the copy, if it is recent enough
                values[i] = self.near.get(keys[i], self._keep_s)
        return values

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
