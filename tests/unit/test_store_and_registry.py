"""The memory store's rules and the layer registry everything else derives from."""

from __future__ import annotations

import asyncio

import pytest

from rag.cache.gateway import RedisGateway
from rag.cache.invalidation import EVERY_SEGMENT as INVALIDATABLE
from rag.cache.layers import INVALIDATION_TARGETS, LAYERS, REPORTED
from rag.metrics import Metrics
from rag.types import CacheStatus
from tests.memory_store import MemoryStore


async def test_memory_store_expires_entries() -> None:
    store = MemoryStore()
    await store.set("a", b"1", 1)
    assert await store.get_many(["a", "b"]) == [b"1", None]
    store._data["a"] = (b"1", 0.0)  # expired
    assert await store.get_many(["a"]) == [None]


async def test_memory_store_refuses_writes_without_ttl() -> None:
    with pytest.raises(ValueError, match="TTL"):
        await MemoryStore().set("a", b"1", 0)


async def test_memory_store_down_misses_and_drops_writes() -> None:
    store = MemoryStore()
    store.down = True
    await store.set("a", b"1", 9)
    assert not store.available and await store.get_many(["a"]) == [None]
    store.down = False
    assert await store.get_many(["a"]) == [None]


def test_every_layer_has_its_own_segment() -> None:
    segments = [layer.segment for layer in LAYERS]
    assert len(set(segments)) == len(segments)
    assert set(INVALIDATION_TARGETS) == {layer.name for layer in LAYERS} | {"semantic"}
    assert set(INVALIDATION_TARGETS.values()) <= set(INVALIDATABLE)


def test_reported_layers_are_the_answer_statuses() -> None:
    assert [layer.name for layer in REPORTED] == ["embedding", "search", "llm"]
    assert [layer.name for layer in LAYERS if CacheStatus.SEMANTIC in layer.statuses] == ["llm"]


def test_metrics_export_every_layer_from_the_start() -> None:
    text = Metrics().prometheus_text().decode()
    for layer in LAYERS:
        assert f'layer="{layer.name}",result="miss"' in text
    assert 'layer="embedding",result="semantic"' not in text


class SlowClient:
    """Answers MGET after ``delay_s``: a Redis that is late, or an event loop that is."""

    def __init__(self) -> None:
        self.delay_s = 0.0
        self.calls = 0

    async def execute_command(self, command: str, *keys: str) -> list[bytes]:
        assert command == "MGET"
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        return [b"v"] * len(keys)


async def test_one_late_answer_is_a_miss_but_does_not_open_the_breaker() -> None:
    client = SlowClient()
    store = RedisGateway(client=client, timeout_s=0.01, timeouts_to_open=3)  # type: ignore[arg-type]
    client.delay_s = 0.05
    assert await store.get_many(["k"]) == [None] and not store.available
    client.delay_s = 0
    assert await store.get_many(["k"]) == [b"v"] and store.available
    client.delay_s = 0.05
    for _ in range(3):
        await store.get_many(["k"])
    client.delay_s, calls = 0, client.calls
    assert await store.get_many(["k"]) == [None]  # open: Redis not even tried
    assert client.calls == calls
