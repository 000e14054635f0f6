"""Redis memory: the server's ``used_memory`` and the size of a namespace's cache entries."""

from __future__ import annotations

from typing import Any

from rag.cache.gateway import RedisGateway, connect
from rag.settings import Settings

# key segment -> layer, for the cache entries whose memory is measured
CACHE_LAYERS = {
    "emb": "embedding",
    "search": "search",
    "llm": "llm",
    "sem": "semantic",
    "tag": "tag",
}


class RedisProbe:
    """The server's ``used_memory`` and the cache entries of one namespace with their size
    (``MEMORY USAGE``: key, value and per-key overhead) by layer."""

    def __init__(self, redis: RedisGateway, namespace: str) -> None:
        self._redis = redis
        self._prefix = f"rag:{namespace}:"

    @classmethod
    def open(cls, url: str, namespace: str) -> RedisProbe:
        client = connect(Settings(redis_timeout_s=10.0), url)  # measurements may wait
        return cls(RedisGateway(client=client, timeout_s=10.0), namespace)

    async def used_memory(self) -> int:
        return await self._redis.used_memory()

    async def entries(self) -> dict[str, dict[str, int]]:
        """``{layer: {"keys", "bytes"}}`` over the cache layers (not the corpus version, nor the
        single-flight locks and relay streams, which live for seconds)."""
        keys = [k async for batch in self._redis.scan(f"{self._prefix}*") for k in batch]
        layers = [k[len(self._prefix) :].split(":", 1)[0] for k in keys]
        chosen = [
            (k, layer) for k, layer in zip(keys, layers, strict=True) if layer in CACHE_LAYERS
        ]
        sizes = await self._redis.memory_usage([k for k, _ in chosen])
        out: dict[str, dict[str, int]] = {}
        for (_, layer), size in zip(chosen, sizes, strict=True):
            if size is None:  # expired between SCAN and MEMORY USAGE
                continue
            row = out.setdefault(CACHE_LAYERS[layer], {"keys": 0, "bytes": 0})
            row["keys"] += 1
            row["bytes"] += int(size)
        return out

    async def aclose(self) -> None:
        await self._redis.client.aclose()


def memory_figures(
    before_used: int, after_used: int, before: dict[str, dict[str, int]], after: dict[str, Any]
) -> dict[str, Any]:
    """What one configuration's run left in Redis, from probes taken before and after it."""
    keys = sum(row["keys"] for row in after.values()) - sum(row["keys"] for row in before.values())
    size = sum(row["bytes"] for row in after.values()) - sum(
        row["bytes"] for row in before.values()
    )
    answers = after.get("llm", {}).get("keys", 0)
    return {
        "measured": True,
        "used_memory_delta": after_used - before_used,
        "entries_by_layer": {
            layer: {**row, "bytes_per_entry": round(row["bytes"] / row["keys"])}
            for layer, row in sorted(after.items())
            if row["keys"]
        },
        "entries": keys,
        "entry_bytes": size,
        "bytes_per_entry": round(size / keys) if keys > 0 else None,
        "answers_cached": answers,
        # everything one distinct question leaves behind: its embedding, search result, answer,
        # semantic entry, and its share of the document tags
        "bytes_per_cached_answer": round(size / answers) if answers else None,
        "used_memory_per_entry": round((after_used - before_used) / keys) if keys > 0 else None,
    }
