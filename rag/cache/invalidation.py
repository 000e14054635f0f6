"""Tags and explicit invalidation.

An answer (and its semantic entry) is tagged with ``doc:<doc_id>`` for every document it was
built from. A tag is a sorted set of entry keys scored by their expiry time: each write prunes
members that have expired and resets the set's own TTL to the entry TTL, so a tag never holds
more than the entries alive under it and disappears with the last of them. Tags only free memory
early: correctness never depends on them (an answer's key carries its sources' content hashes,
and a search entry's key the corpus version).

Invalidation is namespace-scoped (never FLUSHALL) and strict (an admin sees a 503 when Redis is
away): by tag (exactly the tagged entries), by layer (every key of that layer in every tenant's
namespace), or everything. Each is announced so that every process drops the same entries from
its near cache (everything, for a layer or all), and
semantic entries that go are announced on their namespace's channel, so every process drops them
from its index at once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence

from rag.cache.gateway import RedisGateway
from rag.cache.keys import layer_pattern, semantic_events_channel, semantic_namespace, tag_key
from rag.cache.layers import INVALIDATION_TARGETS, SEMANTIC_SEGMENT, TAG_SEGMENT
from rag.cache.near import NEAR_PURGE_CHANNEL, NearCache

# Every key segment ``Invalidation.everything`` deletes: each layer, the semantic index, tags.
EVERY_SEGMENT = (*INVALIDATION_TARGETS.values(), TAG_SEGMENT)


class Tags:
    """Records which entries were built from which documents (fail-open, best effort)."""

    def __init__(self, *, redis: RedisGateway, namespace: str) -> None:
        self._redis = redis
        self._namespace = namespace

    async def tag(self, key: str, tags: Iterable[str], ttl_s: int) -> None:
        """Record that ``key`` (written with ``ttl_s``) belongs to each of ``tags``. An entry
        that misses its tag still expires by TTL and is never served once its sources changed."""
        sets = [tag_key(self._namespace, tag) for tag in sorted(set(tags))]
        await self._redis.add_expiring(sets, key, time.time() + ttl_s, ttl_s)


class Invalidation:
    """Deletes cache entries on an admin's or a document change's request, in the base namespace
    (where tags live: a tag lists every tenant's keys) and each tenant's."""

    def __init__(
        self,
        *,
        redis: RedisGateway,
        namespace: str,
        tenant_namespaces: Sequence[str] = (),
        on_semantic_cleared: Callable[[], None] = lambda: None,
        near: NearCache | None = None,
    ) -> None:
        self._redis = redis.strict("cache store")
        self._namespace = namespace
        self._namespaces = list(dict.fromkeys([namespace, *tenant_namespaces]))
        self._on_semantic_cleared = on_semantic_cleared  # this process's indexes, at once
        self._near = near  # this process's near cache, at once

    async def by_tag(self, tag: str) -> int:
        """Delete exactly the live entries tagged ``tag`` (and the tag); return how many."""
        key = tag_key(self._namespace, tag)
        keys = await self._redis.live_members(key)
        await self._delete([*keys, key])
        await self._purge_near_copies(keys)
        return len(keys)

    async def keys(self, keys: list[str]) -> int:
        """Delete exactly ``keys``; return how many there were."""
        deleted = await self._delete(keys)
        await self._purge_near_copies(keys)
        return deleted

    async def by_layer(self, layer: str) -> int:
        """Delete every key of one ``INVALIDATION_TARGETS`` layer in every namespace."""
        return await self._segments([INVALIDATION_TARGETS[layer]])

    async def everything(self) -> int:
        return await self._segments(EVERY_SEGMENT)

    async def _segments(self, segments: Sequence[str]) -> int:
        deleted = 0
        for namespace in self._namespaces:
            for segment in segments:
                async for batch in self._redis.scan(layer_pattern(namespace, segment)):
                    deleted += await self._delete(batch)
        if SEMANTIC_SEGMENT in segments:
            self._on_semantic_cleared()  # other processes drop them by message
        await self._purge_near_copies(None)
        return deleted

    async def _purge_near_copies(self, keys: list[str] | None) -> None:
        """Every process drops ``keys`` (None: everything) from its near cache
        (``rag.cache.near``), this one at once."""
        if self._near is not None:
            self._near.purge(keys)
        await self._redis.publish(NEAR_PURGE_CHANNEL, json.dumps({"keys": keys}))

    async def _delete(self, keys: list[str]) -> int:
        if not keys:
            return 0
        removed = await self._redis.delete(*keys)
        for key in keys:  # every process drops semantic entries from its in-memory index
            if (namespace := semantic_namespace(key)) is not None:
                message = json.dumps({"op": "del", "key": key})
                await self._redis.publish(semantic_events_channel(namespace), message)
        return removed
