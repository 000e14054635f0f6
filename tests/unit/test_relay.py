"""The answer relay's in-process tier: one generation owned by the process, read by every
identical request at its own pace."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator

import pytest

from rag.cache.relay import AnswerRelay, _checked_completion
from rag.errors import FlightFailedError, FlightTimeoutError
from rag.types import Completion, Usage

PIECES = ["one ", "two ", "three"]


class Producer:
    def __init__(self, delay_s: float = 0.01) -> None:
        self.runs = 0
        self.finished = 0
        self.delay_s = delay_s

    async def produce(self) -> AsyncIterator[str | Completion]:
        self.runs += 1
        for piece in PIECES:
            await asyncio.sleep(self.delay_s)
            yield piece
        self.finished += 1
        yield Completion("".join(PIECES), tuple(PIECES), Usage(1, 3), "stop", "m")


def relay(wait_s: float = 5) -> AnswerRelay:
    return AnswerRelay(store=None, namespace="unit", lock_ttl_s=5, wait_s=wait_s, stream_ttl_s=60)


async def collect(stream: AsyncIterator[str | Completion], pause_s: float = 0) -> list[str]:
    out = []
    async for item in stream:
        if isinstance(item, str):
            out.append(item)
            await asyncio.sleep(pause_s)
    return out


async def test_identical_requests_share_one_generation() -> None:
    producer, r = Producer(), relay()
    texts = await asyncio.gather(*(collect(r.relay("k", producer.produce)) for _ in range(5)))
    assert texts == [PIECES] * 5
    assert producer.runs == 1


async def test_a_slow_reader_holds_no_one() -> None:
    producer, r = Producer(), relay()
    slow = asyncio.create_task(collect(r.relay("k", producer.produce), pause_s=0.5))
    await asyncio.sleep(0.005)
    fast = await asyncio.wait_for(collect(r.relay("k", producer.produce)), timeout=0.5)
    assert fast == PIECES and producer.finished == 1
    assert await slow == PIECES


async def test_the_first_reader_leaving_does_not_stop_the_others() -> None:
    producer, r = Producer(), relay()
    first = r.relay("k", producer.produce)
    assert await anext(first) == "one "
    second = asyncio.create_task(collect(r.relay("k", producer.produce)))
    await asyncio.sleep(0)
    await first.aclose()  # type: ignore[attr-defined]
    assert await second == PIECES
    assert producer.finished == 1


async def test_work_nobody_waits_for_is_cancelled() -> None:
    producer, r = Producer(delay_s=0.05), relay()
    only = r.relay("k", producer.produce)
    await anext(only)
    await only.aclose()  # type: ignore[attr-defined]
    await asyncio.sleep(0.2)
    assert producer.finished == 0
    assert await collect(r.relay("k", producer.produce)) == PIECES  # a new run starts
    assert producer.runs == 2


async def test_a_stalled_generation_ends_in_a_timeout() -> None:
    async def stalled() -> AsyncIterator[str | Completion]:
        yield "a"
        await asyncio.sleep(10)
        yield "b"

    with pytest.raises(FlightTimeoutError):
        await collect(relay(wait_s=0.1).relay("k", stalled))


def test_a_relayed_end_must_match_count_and_hash() -> None:
    pieces = ["a", "b"]
    digest = hashlib.sha256(b"ab")
    good = {
        "pieces": 2,
        "sha256": digest.hexdigest(),
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "finish_reason": "stop",
        "model": "m",
    }
    assert _checked_completion(pieces, digest, json.dumps(good).encode()).text == "ab"
    for bad in ({**good, "pieces": 3}, {**good, "sha256": "0" * 64}):
        with pytest.raises(FlightFailedError):
            _checked_completion(pieces, digest, json.dumps(bad).encode())
    with pytest.raises(FlightFailedError):
        _checked_completion(pieces, digest, b"\xff not json")
