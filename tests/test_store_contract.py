"""Contract: the same assertions on the machine's Redis (127.0.0.1:6379) and on embedded Valkey,
plus fail-open against a port where nothing listens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from rag.cache.store import RedisStore
from tests.conftest import drop_namespace


@pytest.fixture(params=["redis", "valkey"])
async def store_and_client(
    request: pytest.FixtureRequest, namespace: str
) -> AsyncIterator[tuple[RedisStore, aioredis.Redis, str]]:
    url = request.getfixturevalue("local_redis_url" if request.param == "redis" else "valkey_url")
    client = aioredis.Redis.from_url(url)
    yield RedisStore(client=client, timeout_s=1.0), client, f"rag:{namespace}:"
    await client.aclose()
    drop_namespace(url, namespace)


async def test_set_then_get_many_keeps_order_and_misses(store_and_client) -> None:  # type: ignore[no-untyped-def]
    store, _, prefix = store_and_client
    await store.set(prefix + "a", b"1", 60)
    await store.set(prefix + "b", b"\x00\xff", 60)
    assert await store.get_many([prefix + "b", prefix + "missing", prefix + "a"]) == [
        b"\x00\xff",
        None,
        b"1",
    ]
    assert await store.get_many([prefix + "a"]) == [b"1"]
    assert await store.get_many([]) == []
    assert store.available


async def test_every_write_carries_its_ttl(store_and_client) -> None:  # type: ignore[no-untyped-def]
    store, client, prefix = store_and_client
    await store.set(prefix + "x", b"v", 120)
    await store.set_if_absent(prefix + "y", b"v", 30)
    assert 110 <= await client.ttl(prefix + "x") <= 120
    assert 20 <= await client.ttl(prefix + "y") <= 30
    with pytest.raises(ValueError, match="TTL"):
        await store.set(prefix + "z", b"v", 0)
    assert await client.exists(prefix + "z") == 0


async def test_set_if_absent_returns_the_value_that_won(store_and_client) -> None:  # type: ignore[no-untyped-def]
    store, _, prefix = store_and_client
    results = await asyncio.gather(
        *(store.set_if_absent(prefix + "v", str(i).encode(), 60) for i in range(10))
    )
    assert len(set(results)) == 1
    assert await store.get_many([prefix + "v"]) == [results[0]]


async def test_delete_counts_removed_keys(store_and_client) -> None:  # type: ignore[no-untyped-def]
    store, _, prefix = store_and_client
    await store.set(prefix + "d1", b"v", 60)
    assert await store.delete(prefix + "d1", prefix + "d2") == 1
    assert await store.get_many([prefix + "d1"]) == [None]
    assert await store.ping()


async def test_dead_server_fails_open_and_skips_retries_for_a_while() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.2)
    store = RedisStore(client=client, timeout_s=0.2, retry_after_s=60)
    assert await store.get_many(["k1", "k2"]) == [None, None]
    assert not store.available
    trips = store.round_trips
    await store.set("k", b"v", 60)  # dropped without trying: the breaker is open
    assert await store.set_if_absent("k", b"v", 60) is None
    assert await store.delete("k") == 0
    assert not await store.ping()
    assert store.round_trips == trips
    await client.aclose()


async def test_store_recovers_after_the_retry_window(valkey_url: str, namespace: str) -> None:
    client = aioredis.Redis.from_url(valkey_url)
    store = RedisStore(client=client, timeout_s=1.0, retry_after_s=0.05)
    store.available = False  # as after a failure
    await asyncio.sleep(0.06)
    await store.set(f"rag:{namespace}:k", b"v", 60)
    assert store.available
    assert await store.get_many([f"rag:{namespace}:k"]) == [b"v"]
    await client.aclose()
