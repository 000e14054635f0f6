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
from rag.cache.keys import layer_pattern, semantic_events_channel, tag_key
from rag.cache.registry import INVALIDATION_TARGETS, SEMANTIC_SEGMENT, TAG_SEGMENT
from rag.cache.store import RedisStore
from rag.errors import CacheUnavailableError

# What ``invalidate_layers`` accepts: every cache layer, the semantic index and the tag sets.
LAYERS = {**INVALIDATION_TARGETS, "tags": TAG_SEGMENT}


class TagIndex:
    def __init__(self, *, store: RedisStore, namespace: str) -> None:
        self._store = store
        self._redis = store.client  # explicit invalidation fails loudly (a 503), not open
        self._namespace = namespace

    async def tag(self, key: str, tags: Iterable[str], ttl_s: int) -> None:
        """Record that ``key`` (written with ``ttl_s``) belongs to each of ``tags``. Best effort
        (fails open): an entry that misses its tag still expires by TTL and is never served once
        its sources changed (its key carries their content hashes)."""
        now = time.time()

        async def op(client: RedisClient) -> None:
            async with client.pipeline(transaction=False) as pipe:
                for tag in set(tags):
                    key_of_tag = tag_key(self._namespace, tag)
                    pipe.zadd(key_of_tag, {key: now + ttl_s})
                    pipe.zremrangebyscore(key_of_tag, "-inf", now)
                    pipe.expire(key_of_tag, ttl_s)
                await pipe.execute()

        await self._store.run("tag", op, None)

    async def members(self, tag: str) -> list[str]:
        raw = await self._redis.zrangebyscore(tag_key(self._namespace, tag), time.time(), "+inf")
        return [m.decode() if isinstance(m, bytes) else str(m) for m in raw]

    async def invalidate_tag(self, tag: str) -> int:
        """Delete exactly the live entries tagged ``tag`` (and the tag); return how many."""
        try:
            keys = await self.members(tag)
            await self._delete([*keys, tag_key(self._namespace, tag)])
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
                pattern = layer_pattern(self._namespace, LAYERS[layer])
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
            if len(parts) > 2 and parts[2] == SEMANTIC_SEGMENT:
                channel = semantic_events_channel(parts[1])
                await self._redis.publish(channel, json.dumps({"op": "del", "key": key}))
        return removed
