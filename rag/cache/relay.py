"""One upstream generation per answer key, however many requests stream it, in any process.

The first request (holding the key's single-flight lock) generates and appends every piece to a
Redis Stream (``flight_key(…, "live")``, in the lock's cluster slot; with a TTL); identical
requests that arrive meanwhile read that stream from its start, so each gets the pieces produced
before it joined and the rest live.
The stream ends with an ``end`` entry (usage, finish reason) or an ``error`` entry, which every
follower turns into the same error. When the leader dies (its lock expires) or its client goes
away, a follower takes over and generates, unless it already passed part of the answer on to a
live client (a second generation could differ from what that client saw): then it gets an
error. Followers that are not live (``/ask``) hold the pieces back until the end, so they can
always take over."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from redis.exceptions import TimeoutError as RedisTimeoutError

from rag.aio import finish_even_if_cancelled
from rag.cache.connect import RedisClient
from rag.cache.flight import REDIS_DOWN, RedisLock
from rag.cache.keys import flight_key
from rag.errors import FlightFailedError, FlightTimeoutError, RagError
from rag.types import Completion, Usage

ABANDONED = "the request generating this answer went away"


class AnswerRelay:
    def __init__(
        self,
        *,
        redis: RedisClient,
        namespace: str,
        lock_ttl_s: float,
        wait_s: float,
        stream_ttl_s: int = 60,
        poll_s: float = 0.5,
    ) -> None:
        self._redis = redis
        self._namespace = namespace
        self._lock_ttl_s = lock_ttl_s
        self._wait_s = wait_s
        self._stream_ttl_s = stream_ttl_s
        self._poll_ms = int(poll_s * 1000)

    async def relay(
        self, key: str, produce: Callable[[], AsyncIterator[str | Completion]], *, live: bool
    ) -> AsyncIterator[str | Completion]:
        """The pieces of the answer for ``key`` and then its ``Completion``; ``produce`` runs
        only in the leader (and must store the answer itself). ``live``: pass a follower's
        pieces on as they arrive, rather than all at the end."""
        # one hash tag: the lock and the stream live on one node of a cluster
        lock = RedisLock(self._redis, flight_key(self._namespace, key, "lock"), self._lock_ttl_s)
        stream_key = flight_key(self._namespace, key, "live")
        deadline = time.monotonic() + self._wait_s
        while True:
            try:
                leading = await lock.acquire()
            except REDIS_DOWN:  # fail open: generate without coordination
                async for item in produce():
                    yield item
                return
            if leading:
                async for item in self._lead(lock, stream_key, produce):
                    yield item
                return
            held_back: list[str | Completion] = []
            async for followed in self._follow(lock, stream_key, deadline, held_back=not live):
                if followed is None:  # the leader is gone and nothing was passed on: take over
                    break
                if live or isinstance(followed, Completion):
                    for item in (*held_back, followed):
                        yield item
                    held_back.clear()
                else:
                    held_back.append(followed)
            else:
                return

    async def _lead(
        self, lock: RedisLock, live: str, produce: Callable[[], AsyncIterator[str | Completion]]
    ) -> AsyncIterator[str | Completion]:
        outcome: dict[str, str] = {"error": ABANDONED}  # unless it ends otherwise
        async with lock.held():
            await self._safely(self._redis.delete(live))  # a dead leader's leftovers
            try:
                async for item in produce():
                    if isinstance(item, Completion):
                        outcome = {"end": json.dumps(_completion_fields(item))}
                    else:
                        await self._safely(self._redis.xadd(live, {"t": item}))
                    yield item
            except RagError as exc:
                outcome = {"error": str(exc)}
                raise
            finally:
                await finish_even_if_cancelled(self._safely(self._finish(live, outcome)))

    async def _finish(self, live: str, outcome: dict[str, str]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(live, outcome)  # type: ignore[arg-type]
            pipe.expire(live, self._stream_ttl_s)
            await pipe.execute()

    async def _follow(
        self, lock: RedisLock, live: str, deadline: float, *, held_back: bool
    ) -> AsyncIterator[str | Completion | None]:
        """Pieces from the live stream, then a ``Completion``; ``None`` when the leader is gone
        and this follower can take over (nothing passed on yet, or everything held back)."""
        last_id: bytes | str = "0"
        pieces: list[str] = []
        while True:
            try:
                batches = cast(
                    list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]],
                    await self._redis.xread({live: last_id}, count=256, block=self._poll_ms),
                )
            except (TimeoutError, RedisTimeoutError):
                batches = []  # a busy server answered late: read again (the deadline bounds it)
            except REDIS_DOWN as exc:
                if held_back or not pieces:  # nothing shown yet: generate it here instead
                    yield None  # (taking the lock fails open while Redis is down)
                    return
                raise FlightFailedError(f"lost the answer being generated: {exc!r}") from exc
            for _, entries in batches or []:
                for entry_id, fields in entries:
                    last_id = entry_id
                    if b"t" in fields:
                        piece = fields[b"t"].decode()
                        pieces.append(piece)
                        yield piece
                    elif b"end" in fields:
                        yield _completion(pieces, json.loads(fields[b"end"]))
                        return
                    else:
                        error = fields.get(b"error", b"").decode()
                        if error == ABANDONED and (held_back or not pieces):
                            yield None
                        raise FlightFailedError(error or "the answer being generated failed")
            if not batches:
                if not await lock.exists():
                    if pieces and not held_back:
                        raise FlightFailedError(ABANDONED)
                    yield None  # the leader died (lock expired) or finished without a trace
                if time.monotonic() >= deadline:
                    raise FlightTimeoutError(
                        f"waited {self._wait_s:.0f} s for an identical answer being generated"
                    )

    @staticmethod
    async def _safely(call: Any) -> None:
        # On failure followers notice the missing pieces and time out; the leader goes on.
        with contextlib.suppress(*REDIS_DOWN):
            await call


def _completion_fields(completion: Completion) -> dict[str, Any]:
    return {
        "prompt_tokens": completion.usage.prompt_tokens,
        "completion_tokens": completion.usage.completion_tokens,
        "finish_reason": completion.finish_reason,
        "model": completion.model,
    }


def _completion(pieces: list[str], fields: dict[str, Any]) -> Completion:
    return Completion(
        text="".join(pieces),
        pieces=tuple(pieces),
        usage=Usage(fields["prompt_tokens"], fields["completion_tokens"]),
        finish_reason=fields["finish_reason"],
        model=fields["model"],
    )
