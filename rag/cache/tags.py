"""Tags and explicit invalidation.

An answer (and its semantic entry) is tagged with ``doc:<doc_id>`` for every document it was
built from. A tag is a sorted set of entry keys scored by their expiry time: each write prunes
members that have expired and resets the set's own TTL to the entry TTL, so a tag never holds
more than the entries alive under it and disappears with the last of them.

Invalidation is namespace-scoped (never FLUSHALL): by tag (exactly the tagged entries), by layer
(every key of that layer in the namespace), or everything. Semantic entries that go are announced
on the semantic cache's channel, so every process drops them from its index at once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence

from rag.cache.connect import REDIS_ERRORS, RedisClient
from rag.cache.keys import semantic_events_channel
from rag.errors import CacheUnavailableError

LAYERS = {"embedding": "emb", "search": "search", "llm": "llm", "semantic": "sem", "tags": "tag"}


class TagIndex:
    def __init__(self, *, redis: RedisClient, namespace: str) -> None:
        self._redis = redis
        self._namespace = namespace

    def _tag_key(self, tag: str) -> str:
        return f"rag:{self._namespace}:tag:{tag}"

    async def tag(self, key: str, tags: Iterable[str], ttl_s: int) -> None:
        """Record that ``key`` (written with ``ttl_s``) belongs to each of ``tags``. Best effort:
        an entry that misses its tag still expires by TTL and is never served once its sources
        changed (its key carries their content hashes)."""
        now = time.time()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for tag in set(tags):
                    tag_key = self._tag_key(tag)
                    pipe.zadd(tag_key, {key: now + ttl_s})
                    pipe.zremrangebyscore(tag_key, "-inf", now)
                    pipe.expire(tag_key, ttl_s)
                await pipe.execute()
        except REDIS_ERRORS:
            pass

    async def members(self, tag: str) -> list[str]:
        raw = await self._redis.zrangebyscore(self._tag_key(tag), time.time(), "+inf")
        return [m.decode() if isinstance(m, bytes) else str(m) for m in raw]

    async def invalidate_tag(self, tag: str) -> int:
        """Delete exactly the live entries tagged ``tag`` (and the tag); return how many."""
        try:
            keys = await self.members(tag)
            await self._delete([*keys, self._tag_key(tag)])
        except REDIS_ERRORS as exc:
            raise CacheUnavailableError(f"cache store unavailable: {exc!r}") from exc
        return len(keys)

    async def invalidate_layers(self, layers: Sequence[str]) -> int:
        """Delete every key of the given layers (``LAYERS`` names) in this namespace. On a
        cluster the SCAN walks every primary (redis-py's cluster ``scan_iter``) and each batch's
        DELETE is split by slot."""
        deleted = 0
        try:
            for layer in layers:
                pattern = f"rag:{self._namespace}:{LAYERS[layer]}:*"
                batch: list[str] = []
                async for key in self._redis.scan_iter(match=pattern, count=1000):
                    batch.append(key.decode() if isinstance(key, bytes) else key)
                    if len(batch) == 500:
                        deleted += await self._delete(batch)
                        batch = []
                deleted += await self._delete(batch)
        except REDIS_ERRORS as exc:
            raise CacheUnavailableError(f"cache store unavailable: {exc!r}") from exc
        return deleted

    async def _delete(self, keys: list[str]) -> int:
        if not keys:
            return 0
        removed = int(await self._redis.delete(*keys))
        for key in keys:  # every process drops semantic entries from its in-memory index
            parts = key.split(":")  # rag:{namespace}:{layer}:…; a tag lists every tenant's keys
            if len(parts) > 2 and parts[2] == "sem":
                channel = semantic_events_channel(parts[1])
                await self._redis.publish(channel, json.dumps({"op": "del", "key": key}))
        return removed
