"""The answer relay across processes, on the embedded Valkey: two ``AnswerRelay`` instances, each
with its own client and ``RedisGateway``, stand for two app processes. One generation serves both;
the pieces travel as stream entries ``1-0``, ``2-0``, … and an end entry with their count and
sha256; a follower never returns a text other than the leader's. (The relay's in-process tier is
covered in ``tests/unit/test_relay.py``, the app with Redis stalled or dead in
``tests/test_redis_faults.py``.)"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from rag.cache.gateway import RedisGateway
from rag.cache.keys import flight_key
from rag.cache.relay import AnswerRelay
from rag.errors import FlightFailedError
from rag.types import Completion, Usage

PIECES = ["Caches", " keep", " answers", " for", " one", " hour", "."]
COMPLETION = Completion("".join(PIECES), tuple(PIECES), Usage(20, 7), "stop", "m")


@pytest.fixture
async def clients(valkey_url: str) -> AsyncIterator[list[aioredis.Redis]]:
    made = [aioredis.Redis.from_url(valkey_url) for _ in range(3)]
    yield made
    for client in made:
        await client.aclose()


def relay(client: aioredis.Redis, namespace: str, *, timeout_s: float = 1.0) -> AnswerRelay:
    return AnswerRelay(
        store=RedisGateway(client=client, timeout_s=timeout_s),
        namespace=namespace,
        lock_ttl_s=5,
        wait_s=10,
        stream_ttl_s=60,
        poll_s=0.1,
    )


class Producer:
    """Counts its runs; yields ``PIECES`` ``gap_s`` apart, then ``COMPLETION``."""

    def __init__(self, gap_s: float = 0.05) -> None:
        self.runs = 0
        self.gap_s = gap_s

    async def __call__(self) -> AsyncIterator[str | Completion]:
        self.runs += 1
        for piece in PIECES:
            await asyncio.sleep(self.gap_s)
            yield piece
        yield COMPLETION


async def collect(answer_relay: AnswerRelay, produce: Callable[[], Any]) -> list[Any]:
    return [item async for item in answer_relay.relay("answer-key", produce)]


async def leader_started(client: aioredis.Redis, namespace: str) -> None:
    lock = flight_key(namespace, "answer-key", "lock")
    for _ in range(100):
        if await client.exists(lock):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the leader did not take the lock")


async def test_two_processes_share_one_generation_through_numbered_pieces(
    clients: list[aioredis.Redis], namespace: str
) -> None:
    one, two = relay(clients[0], namespace), relay(clients[1], namespace)
    produce = Producer()
    leader = asyncio.create_task(collect(one, produce))
    await leader_started(clients[2], namespace)
    followed = await collect(two, produce)
    assert await leader == [*PIECES, COMPLETION]
    assert followed == [*PIECES, COMPLETION]  # same pieces, same usage, finish and model
    assert produce.runs == 1

    entries = await clients[2].xrange(flight_key(namespace, "answer-key", "live"))
    ids = [entry_id.decode() for entry_id, _ in entries]
    assert ids == [f"{n}-0" for n in range(1, len(PIECES) + 2)]
    assert [fields[b"t"].decode() for _, fields in entries[:-1]] == PIECES
    end = json.loads(entries[-1][1][b"end"])
    assert end["pieces"] == len(PIECES)
    assert end["sha256"] == hashlib.sha256(COMPLETION.text.encode()).hexdigest()
    assert await clients[2].ttl(flight_key(namespace, "answer-key", "live")) > 0


async def _follow_a_written_stream(
    clients: list[aioredis.Redis], namespace: str, entries: list[tuple[str, dict[str, str]]]
) -> list[Any]:
    """A follower reading ``entries``, written by a 'leader' that holds the lock."""
    await clients[2].set(flight_key(namespace, "answer-key", "lock"), "someone", px=5000)
    stream = flight_key(namespace, "answer-key", "live")
    for entry_id, fields in entries:
        await clients[2].xadd(stream, fields, id=entry_id)  # type: ignore[arg-type]
    produce = Producer()
    try:
        return await collect(relay(clients[1], namespace), produce)
    finally:
        assert produce.runs == 0  # it followed: it never generated itself


def _end(text_pieces: list[str], **changed: Any) -> dict[str, str]:
    fields = {
        "prompt_tokens": 20,
        "completion_tokens": len(text_pieces),
        "finish_reason": "stop",
        "model": "m",
        "pieces": len(text_pieces),
        "sha256": hashlib.sha256("".join(text_pieces).encode()).hexdigest(),
    }
    return {"end": json.dumps(fields | changed)}


async def test_a_written_stream_is_followed(clients: list[aioredis.Redis], namespace: str) -> None:
    entries = [(f"{n}-0", {"t": p}) for n, p in enumerate(PIECES, 1)]
    entries.append((f"{len(PIECES) + 1}-0", _end(PIECES)))
    items = await _follow_a_written_stream(clients, namespace, entries)
    assert items[:-1] == PIECES and items[-1].text == COMPLETION.text


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        ("gap", "missing"),
        ("count", "differs"),
        ("hash", "differs"),
    ],
)
async def test_a_follower_never_returns_another_text(
    clients: list[aioredis.Redis], namespace: str, tamper: str, message: str
) -> None:
    pieces = list(PIECES)
    entries = [(f"{n}-0", {"t": p}) for n, p in enumerate(pieces, 1)]
    end = _end(pieces)
    if tamper == "gap":  # piece 3 was lost: the entries go 1, 2, 4, …
        del entries[2]
    elif tamper == "count":
        end = _end(pieces, pieces=len(pieces) + 1)
    else:
        end = _end(pieces, sha256=hashlib.sha256(b"another text").hexdigest())
    entries.append((f"{len(PIECES) + 1}-0", end))
    with pytest.raises(FlightFailedError, match=message):
        await _follow_a_written_stream(clients, namespace, entries)


async def test_a_leader_that_died_before_passing_anything_on_is_taken_over(
    clients: list[aioredis.Redis], namespace: str
) -> None:
    # a process took the lock and was killed: no stream, no release, the lock expires
    await clients[2].set(flight_key(namespace, "answer-key", "lock"), "dead", px=300)
    produce = Producer()
    assert await collect(relay(clients[1], namespace), produce) == [*PIECES, COMPLETION]
    assert produce.runs == 1


async def test_a_leader_that_died_midway_is_a_clear_error_never_half_an_answer(
    clients: list[aioredis.Redis], namespace: str
) -> None:
    await clients[2].set(flight_key(namespace, "answer-key", "lock"), "dead", px=300)
    stream = flight_key(namespace, "answer-key", "live")
    for n, piece in enumerate(PIECES[:2], 1):
        await clients[2].xadd(stream, {"t": piece}, id=f"{n}-0")
    produce = Producer()
    seen: list[Any] = []
    with pytest.raises(FlightFailedError, match="went away"):
        async for item in relay(clients[1], namespace).relay("answer-key", produce):
            seen.append(item)
    assert seen == PIECES[:2] and produce.runs == 0


async def test_a_follower_whose_read_answers_late_resumes_where_it_was(
    clients: list[aioredis.Redis], namespace: str
) -> None:
    one = relay(clients[0], namespace)
    two = relay(clients[1], namespace, timeout_s=0.2)
    original = clients[1].xread
    delayed = False

    async def late_once(streams: dict[Any, Any], *args: Any, **kwargs: Any) -> Any:
        nonlocal delayed
        if not delayed and "0" not in streams.values():  # a piece has arrived already
            delayed = True
            await asyncio.sleep(1.0)  # a busy server, or this process's loop, was late
        return await original(streams, *args, **kwargs)

    clients[1].xread = late_once  # type: ignore[method-assign]
    produce = Producer()
    leader = asyncio.create_task(collect(one, produce))
    await leader_started(clients[2], namespace)
    followed = await collect(two, produce)
    assert delayed
    assert await leader == [*PIECES, COMPLETION]
    assert followed == [*PIECES, COMPLETION]
    assert produce.runs == 1
