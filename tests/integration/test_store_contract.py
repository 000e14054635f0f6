"""Contract: the same ``KVStore`` assertions on the in-memory store the unit tier uses, the
machine's Redis (127.0.0.1:6379) and the embedded Valkey; then ``RedisGateway.run`` and its
``strict`` view on the real servers, and fail-open against a port where nothing listens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from rag.cache.gateway import RedisGateway
from rag.errors import CacheUnavailableError
from rag.protocols import KVStore
from tests.conftest import drop_namespace
from tests.memory_store import MemoryStore

TTL = Callable[[str], Awaitable[float | None]]


@pytest.fixture(params=["memory", "redis", "valkey"])
async def kv_store(
    request: pytest.FixtureRequest, namespace: str
) -> AsyncIterator[tuple[KVStore, TTL, str]]:
    """A store, a way to read a key's TTL in seconds (None: absent), and a key prefix."""
    if request.param == "memory":
        memory = MemoryStore()

        async def memory_ttl(key: str) -> float | None:
            return memory.ttl(key)

        yield memory, memory_ttl, f"rag:{namespace}:"
        return
    url = request.getfixturevalue("local_redis_url" if request.param == "redis" else "valkey_url")
    client = aioredis.Redis.from_url(url)

    async def redis_ttl(key: str) -> float | None:
        ttl = await client.ttl(key)
        return None if ttl < 0 else float(ttl)

    yield RedisGateway(client=client, timeout_s=1.0), redis_ttl, f"rag:{namespace}:"
    await client.aclose()
    drop_namespace(url, namespace)


@pytest.fixture(params=["redis", "valkey"])
async def store_and_client(
    request: pytest.FixtureRequest, namespace: str
) -> AsyncIterator[tuple[RedisGateway, aioredis.Redis, str]]:
    url = request.getfixturevalue("local_redis_url" if request.param == "redis" else "valkey_url")
    client = aioredis.Redis.from_url(url)
    yield RedisGateway(client=client, timeout_s=1.0), client, f"rag:{namespace}:"
    await client.aclose()
    drop_namespace(url, namespace)


async def test_set_then_get_many_keeps_order_and_misses(kv_store) -> None:  # type: ignore[no-untyped-def]
    store, _, prefix = kv_store
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


async def test_every_write_carries_its_ttl(kv_store) -> None:  # type: ignore[no-untyped-def]
    store, ttl, prefix = kv_store
    await store.set(prefix + "x", b"v", 120)
    await store.set(prefix + "y", b"v", 30)
    assert 110 <= (await ttl(prefix + "x") or 0) <= 120
    assert 20 <= (await ttl(prefix + "y") or 0) <= 30
    with pytest.raises(ValueError, match="TTL"):
        await store.set(prefix + "z", b"v", 0)
    assert await ttl(prefix + "z") is None


async def test_repair_keeps_values_and_absent_keys(kv_store) -> None:  # type: ignore[no-untyped-def]
    store, _, prefix = kv_store
    await store.set(prefix + "v", b"kept", 60)
    await store.repair(prefix + "v")
    await store.repair(prefix + "absent")
    assert await store.get_many([prefix + "v", prefix + "absent"]) == [b"kept", None]


async def test_a_key_of_another_type_is_repaired_where_it_is_met(store_and_client) -> None:  # type: ignore[no-untyped-def]
    """MGET reads a hash as absent; ``repair`` deletes it, and a lock or a tag write over a key
    of another type deletes it and goes on (issue #21)."""
    store, client, prefix = store_and_client
    for key in ("hash", "lock", "tag"):
        await client.hset(prefix + key, mapping={"f": "v"})
    assert await store.get_many([prefix + "hash"]) == [None]
    await store.repair(prefix + "hash")
    assert await client.exists(prefix + "hash") == 0
    assert await store.acquire(prefix + "lock", "token", 5000) is True
    assert await client.get(prefix + "lock") == b"token"
    await store.add_expiring([prefix + "tag"], "member", time.time() + 60, 60)
    assert await store.live_members(prefix + "tag") == ["member"]


async def test_delete_counts_removed_keys(kv_store) -> None:  # type: ignore[no-untyped-def]
    store, _, prefix = kv_store
    await store.set(prefix + "d1", b"v", 60)
    assert await store.delete(prefix + "d1", prefix + "d2") == 1
    assert await store.get_many([prefix + "d1"]) == [None]
    assert store.available


async def test_dead_server_fails_open_and_skips_retries_for_a_while() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.2)
    store = RedisGateway(client=client, timeout_s=0.2, retry_after_s=60)
    assert await store.get_many(["k1", "k2"]) == [None, None]
    assert not store.available
    trips = store.round_trips
    await store.set("k", b"v", 60)  # dropped without trying: the breaker is open
    assert await store.delete("k") == 0
    assert not await store.ping()
    assert store.round_trips == trips
    await client.aclose()


async def test_store_recovers_after_the_retry_window(valkey_url: str, namespace: str) -> None:
    client = aioredis.Redis.from_url(valkey_url)
    store = RedisGateway(client=client, timeout_s=1.0, retry_after_s=0.05)
    store.available = False  # as after a failure
    await asyncio.sleep(0.06)
    await store.set(f"rag:{namespace}:k", b"v", 60)
    assert store.available
    assert await store.get_many([f"rag:{namespace}:k"]) == [b"v"]
    await client.aclose()


async def test_run_gives_the_ops_result_or_else_the_fallback(store_and_client) -> None:  # type: ignore[no-untyped-def]
    store, _, prefix = store_and_client

    async def incr(client: aioredis.Redis) -> int:
        return int(await client.incr(prefix + "n"))

    async def broken(client: aioredis.Redis) -> int:
        await client.execute_command("NO-SUCH-COMMAND")
        return 1

    assert await store.run("incr", incr, -1) == 1
    assert store.available
    assert await store.run("broken", broken, -1) == -1  # an error reply gives the fallback,
    assert store.available  # but Redis answered: not an outage, the breaker stays closed
    assert await store.run("incr", incr, -1) == 2


async def test_run_gives_the_fallback_past_its_deadline(valkey_url: str) -> None:
    client = aioredis.Redis.from_url(valkey_url)
    store = RedisGateway(client=client, timeout_s=0.1, retry_after_s=60)
    clock = asyncio.get_running_loop().time

    async def slow(client: aioredis.Redis) -> str:
        await asyncio.sleep(5)
        return "late"

    async def fast(client: aioredis.Redis) -> str:
        return str(await client.ping())

    started = clock()
    assert await store.run("slow", slow, "fallback") == "fallback"
    assert clock() - started < 1.0
    assert not store.available
    # one late answer does not open the breaker: the next call is tried, and closes it
    assert await store.run("fast", fast, "skipped") == "True"
    assert store.available
    # three in a row do: the next call is not even tried
    for _ in range(3):
        assert await store.run("slow", slow, "fallback") == "fallback"
    trips = store.round_trips
    assert await store.run("fast", fast, "skipped") == "skipped"
    assert store.round_trips == trips and not store.available

    # an explicit longer deadline is honoured
    patient = RedisGateway(client=client, timeout_s=0.05)

    async def a_bit_slow(client: aioredis.Redis) -> str:
        await asyncio.sleep(0.2)
        return "on time"

    assert await patient.run("slowish", a_bit_slow, "fallback", timeout_s=1.0) == "on time"
    await client.aclose()


async def test_publish_reaches_a_subscriber(store_and_client) -> None:  # type: ignore[no-untyped-def]
    store, client, prefix = store_and_client
    pubsub = client.pubsub()
    await pubsub.subscribe(prefix + "channel")
    await store.publish(prefix + "channel", "hello")
    message = None
    for _ in range(20):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None:
            break
    assert message is not None and message["data"] == b"hello"
    await pubsub.aclose()


async def test_strict_store_answers_or_raises(valkey_url: str, namespace: str) -> None:
    live = aioredis.Redis.from_url(valkey_url)
    strict = RedisGateway(client=live, timeout_s=1.0).strict("session store")
    key = f"rag:{namespace}:strict"
    await strict.run("session store", lambda c: c.set(key, b"v", ex=60), None)
    assert await strict.run("session store", lambda c: c.get(key), None) == b"v"
    await live.delete(key)
    await live.aclose()

    dead = aioredis.Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.2)
    strict = RedisGateway(client=dead, timeout_s=0.5, retry_after_s=60).strict("session store")
    with pytest.raises(CacheUnavailableError, match="session store"):
        await strict.run("session store", lambda c: c.get(key), None)
    trips = strict.round_trips
    # the breaker is open now: the next call is not tried, and raises all the same
    with pytest.raises(CacheUnavailableError, match="session store"):
        await strict.run("session store", lambda c: c.get(key), None)
    assert strict.round_trips == trips
    await dead.aclose()


async def test_strict_store_raises_past_its_deadline(valkey_url: str) -> None:
    client = aioredis.Redis.from_url(valkey_url)
    strict = RedisGateway(client=client, timeout_s=0.1).strict("session store")

    async def slow(client: aioredis.Redis) -> None:
        await asyncio.sleep(5)

    with pytest.raises(CacheUnavailableError, match="TimeoutError"):
        await strict.run("session store", slow, None)
    await client.aclose()
