"""The near cache (issue #21): read first while fresh, read when Redis fails or lost the entry
while kept, bounded by bytes, cleared by a purge. Over the real ``RedisGateway`` on the embedded
Valkey, with a clock the test moves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from rag.cache.gateway import RedisGateway
from rag.cache.near import EPOCH_KEY, WRITE_BACK_TTL_S, NearCache, NearStore
from services.serving import free_port  # nothing listens there
from tests.redis_servers import redis_server


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def gateway(valkey_url: str) -> AsyncIterator[RedisGateway]:
    client = aioredis.Redis.from_url(valkey_url)
    yield RedisGateway(client=client, timeout_s=1.0, retry_after_s=60)
    await client.aclose()


def near_store(gateway: RedisGateway, clock: Clock) -> NearStore:
    near = NearCache(max_bytes=10_000, clock=clock)
    return NearStore(redis=gateway, near=near, fresh_s=2.0, keep_s=60.0, clock=clock)


async def test_a_fresh_copy_is_read_without_a_round_trip(gateway: RedisGateway) -> None:
    clock = Clock()
    store = near_store(gateway, clock)
    await store.set("near:a", b"A", 60)
    trips = gateway.round_trips
    assert await store.get_many(["near:a"]) == [b"A"]
    assert gateway.round_trips == trips
    clock.now += 3  # past fresh_s: Redis is asked again (and the copy renewed)
    assert await store.get_many(["near:a"]) == [b"A"]
    assert gateway.round_trips == trips + 1
    await gateway.delete("near:a")


async def test_copies_are_written_back_only_when_redis_lost_its_data(
    gateway: RedisGateway,
) -> None:
    """An entry deleted from Redis (a purge, an eviction) is served from the copy but not
    written back; once the shared marker is gone (Redis restarted empty), it is, so a hot entry
    outlives the copy."""
    clock = Clock()
    store = near_store(gateway, clock)
    assert not await store.redis_lost_data()  # the marker is noted
    await store.set("near:w", b"W", 60)
    await gateway.client.delete("near:w")
    clock.now += 2
    assert await store.get_many(["near:w"]) == [b"W"]
    assert await gateway.client.exists("near:w") == 0
    await gateway.client.delete(EPOCH_KEY)  # what a restart of an empty Redis does
    clock.now += 2
    assert await store.get_many(["near:w"]) == [b"W"]
    assert await gateway.client.get("near:w") == b"W"
    assert 0 < await gateway.client.ttl("near:w") <= WRITE_BACK_TTL_S


async def test_a_kept_copy_serves_when_redis_lost_the_entry_or_is_down(
    gateway: RedisGateway,
) -> None:
    clock = Clock()
    store = near_store(gateway, clock)
    await store.set("near:b", b"B", 60)
    await gateway.client.delete("near:b")  # a restart or an eviction lost it
    clock.now += 30
    assert await store.get_many(["near:b", "near:never"]) == [b"B", None]
    live = gateway.client
    gateway.client = aioredis.Redis(host="127.0.0.1", port=free_port())  # Redis goes away
    try:
        assert await store.get_many(["near:b"]) == [b"B"]
        assert not store.available
        clock.now += 31  # past keep_s: nothing more from the copy
        assert await store.get_many(["near:b"]) == [None]
    finally:
        await gateway.client.aclose()
        gateway.client = live


async def test_a_purge_clears_the_copy_and_a_delete_drops_it(gateway: RedisGateway) -> None:
    store = near_store(gateway, Clock())
    await store.set("near:c", b"C", 60)
    await store.set("near:d", b"D", 60)
    await store.delete("near:c")
    assert await store.get_many(["near:c"]) == [None]
    store.near.clear()  # what a purge message does
    await gateway.client.delete("near:d")
    assert await store.get_many(["near:d"]) == [None]


def test_the_copy_is_bounded_by_bytes_least_recently_used_out() -> None:
    near = NearCache(max_bytes=30, clock=Clock())
    near.put("k1", b"x" * 10)  # 12 bytes with its key
    near.put("k2", b"y" * 10)
    assert near.get("k1", 10) is not None  # k1 is now the most recent
    near.put("k3", b"z" * 10)  # 36 > 30: k2 goes
    assert near.get("k2", 10) is None and near.get("k1", 10) and near.get("k3", 10)
    assert near.bytes == 24
    near.put("big", b"w" * 100)  # larger than the whole cache: not kept
    assert near.get("big", 10) is None and near.bytes == 24


def test_a_purge_message_drops_its_keys_and_anything_unreadable_drops_everything() -> None:
    """A document change purges the answers tagged with it, not the whole copy (the fault run
    showed a whole-copy purge after an empty Redis restart sending every hot question to the
    LLM); a purge by layer, or one that cannot be read, clears everything."""
    near = NearCache(max_bytes=1000, clock=Clock())
    for key in ("a", "b", "c"):
        near.put(key, b"v")
    near.on_purge_message(b'{"keys": ["a"]}')
    assert near.get("a", 10) is None and near.get("b", 10) == b"v"
    near.on_purge_message(b'{"keys": null}')
    assert len(near) == 0
    near.put("d", b"v")
    near.on_purge_message(b"\xff not json")
    assert len(near) == 0


async def test_a_stalled_redis_costs_a_kept_copy_the_hedge_not_the_deadline(
    tmp_path: Path,
) -> None:
    """A private ``redis-server`` stalled by ``DEBUG SLEEP``: a read whose entries all have a
    kept copy waits ``hedge_s`` (20 ms), not the gateway's 1 s deadline, and Redis's late
    answer refreshes the copy; a read with no copy waits for Redis."""
    with redis_server(tmp_path, "--enable-debug-command", "yes") as server:
        client = aioredis.Redis.from_url(server.url)
        gateway = RedisGateway(client=client, timeout_s=1.0, retry_after_s=60)
        clock = Clock()
        near = NearCache(max_bytes=10_000, clock=clock)
        store = NearStore(redis=gateway, near=near, fresh_s=2.0, keep_s=60.0, hedge_s=0.02)
        try:
            await store.set("hedge:a", b"A", 60)
            await store.get_many(["hedge:a"])  # a round trip now: the connection is open
            clock.now += 10  # past fresh_s: Redis is asked first
            stall = asyncio.create_task(asyncio.to_thread(_stall, server.url, 0.5))
            await asyncio.sleep(0.1)  # the stall has begun
            started = time.perf_counter()
            assert await store.get_many(["hedge:a"]) == [b"A"]
            assert time.perf_counter() - started < 0.2
            started = time.perf_counter()
            assert await store.get_many(["hedge:none"]) == [None]
            assert time.perf_counter() - started > 0.2  # no copy: it waited for Redis
            await stall
            await asyncio.sleep(0.05)
            assert near.get("hedge:a", 1.0) == b"A"  # refreshed by the late answer
        finally:
            await client.aclose()


def _stall(url: str, seconds: float) -> None:
    with redis.Redis.from_url(url) as blocking:
        blocking.execute_command("DEBUG", "SLEEP", seconds)
