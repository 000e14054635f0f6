"""One upstream generation per answer key, however many requests want it, in any process.

Two tiers, as for single-flight:
- **In this process**, an answer being generated is a ``_Run`` owned by the process, not by the
  request that started it: a task drives the generation at the LLM's pace into the run's buffer,
  and every identical request reads that buffer from its start at its own pace. A slow reader
  slows nobody; a reader that leaves stops nobody; the answer is stored once it finished even if
  the request that started it left. When the last reader leaves before the end, the work is
  cancelled (nobody waits for it) and nothing is stored. This tier needs no Redis, so with Redis
  down N identical requests still make one LLM call.
- **Across processes**, the run that holds the key's Redis lock generates and appends every
  piece to a Redis Stream (``flight_key(…, "live")``, in the lock's cluster slot, with a TTL)
  under the explicit entry id ``<n>-0`` for piece ``n``; the end entry carries the number of
  pieces and a sha256 of the whole text. A run in another process follows that stream into its
  own buffer and checks every id is the next one and that count and hash match at the end: a gap,
  a duplicate or a mismatch ends it with an error, never with a text other than the leader's.
  When the leader dies (its lock expires) before anything was passed on, the follower takes over
  and generates; after that, it fails with a clear error.

Every Redis call goes through the fail-open ``RedisGateway``: Redis down or slow means no
coordination across processes (each process generates once), never a crash."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from rag.aio import finish_even_if_cancelled
from rag.cache.flight import RedisLock
from rag.cache.gateway import RedisGateway, StreamBatches
from rag.cache.keys import flight_key
from rag.errors import FlightFailedError, FlightTimeoutError, RagError
from rag.types import Completion, Usage

ABANDONED = "the request generating this answer went away"
Produce = Callable[[], AsyncIterator[str | Completion]]


class _Run:
    """An answer being produced in this process: its pieces so far, then its end or error."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.completion: Completion | None = None
        self.error: BaseException | None = None
        self.readers = 0
        self.task: asyncio.Task[None] | None = None
        self.restarts = 0  # generations started over after a leader elsewhere went away
        self._changed = asyncio.Event()

    @property
    def done(self) -> bool:
        return self.completion is not None or self.error is not None

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def push(self, piece: str) -> None:
        self.pieces.append(piece)
        self._wake()

    def finish(self, completion: Completion) -> None:
        self.completion = completion
        self._wake()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._wake()

    def restart(self) -> None:
        """Drop the pieces so far: the answer is generated again from its start."""
        self.pieces = []
        self.restarts += 1
        self._wake()

    async def read(self, wait_s: float, *, live: bool) -> AsyncIterator[str | Completion]:
        """Every piece from the first, then the ``Completion``; raises the run's error. Gives
        up after ``wait_s`` without progress. ``live``: pass pieces on as they come; such a
        reader cannot follow a restart once it passed a piece on. Otherwise all pieces come at
        the end, so a restart costs nothing but time."""
        sent, restarts = 0, self.restarts
        while True:
            changed = self._changed
            if self.restarts != restarts:
                if sent:
                    raise FlightFailedError(ABANDONED)  # what it passed on may differ
                restarts = self.restarts
            while live and sent < len(self.pieces):
                yield self.pieces[sent]
                sent += 1
            if self.completion is not None:
                for piece in self.pieces[sent:]:
                    yield piece
                yield self.completion
                return
            if self.error is not None:
                raise self.error
            try:
                async with asyncio.timeout(wait_s):
                    await changed.wait()
            except TimeoutError:
                raise FlightTimeoutError(
                    f"waited {wait_s:.0f} s for the answer being generated to go on"
                ) from None


class AnswerRelay:
    def __init__(
        self,
        *,
        store: RedisGateway | None,
        namespace: str,
        lock_ttl_s: float,
        wait_s: float,
        stream_ttl_s: int,
        poll_s: float = 0.5,
    ) -> None:
        self._redis = store  # None: coalesce within this process only
        self._namespace = namespace
        self._lock_ttl_s = lock_ttl_s
        self._wait_s = wait_s
        self._stream_ttl_s = stream_ttl_s
        self._poll_s = poll_s
        self._runs: dict[str, _Run] = {}

    def running(self, key: str) -> bool:
        """Whether an answer for ``key`` is being produced in this process."""
        return key in self._runs

    def readers(self, key: str) -> int:
        """How many requests in this process wait for the answer for ``key``."""
        run = self._runs.get(key)
        return run.readers if run is not None else 0

    async def relay(
        self, key: str, produce: Produce, *, live: bool = True
    ) -> AsyncIterator[str | Completion]:
        """The pieces of the answer for ``key`` and then its ``Completion``. ``produce`` runs at
        most once per key at a time (across processes while Redis answers) and must store the
        answer itself. ``live``: pieces as they come (a stream), else all at the end (``/ask``,
        which then survives a takeover)."""
        run = self._runs.get(key)
        if run is None:
            run = self._runs[key] = _Run()
            run.task = asyncio.create_task(self._drive(key, run, produce), name=f"relay {key}")
        run.readers += 1
        try:
            async for item in run.read(self._wait_s, live=live):
                yield item
        finally:
            run.readers -= 1
            if run.readers == 0 and not run.done and run.task is not None:
                self._forget(key, run)  # nobody waits for it any more
                run.task.cancel()

    def _forget(self, key: str, run: _Run) -> None:
        if self._runs.get(key) is run:
            del self._runs[key]

    async def aclose(self) -> None:
        tasks = [run.task for run in self._runs.values() if run.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _drive(self, key: str, run: _Run, produce: Produce) -> None:
        try:
            await self._coordinate(key, run, produce)
        except Exception as exc:
            run.fail(exc)
        except asyncio.CancelledError:
            run.fail(FlightFailedError(ABANDONED))
            raise
        finally:
            self._forget(key, run)

    async def _coordinate(self, key: str, run: _Run, produce: Produce) -> None:
        if self._redis is None:
            await self._generate(run, produce, None)
            return
        # one hash tag: the lock and the stream live on one node of a cluster
        lock = RedisLock(self._redis, flight_key(self._namespace, key, "lock"), self._lock_ttl_s)
        stream = _LiveStream(
            self._redis, flight_key(self._namespace, key, "live"), self._stream_ttl_s
        )
        deadline = time.monotonic() + self._wait_s
        while True:
            leading = await lock.acquire()
            if leading is None:  # Redis does not answer: generate without coordination
                await self._generate(run, produce, None)
                return
            if leading:
                async with lock.held():
                    await self._generate(run, produce, stream)
                return
            if await self._follow(lock, stream, deadline, run):
                return
            # The leader went away: try to take over. Readers that passed none of its pieces on
            # (``/ask``, or a stream that had not started) get the new generation's.
            if run.pieces:
                run.restart()

    async def _generate(self, run: _Run, produce: Produce, stream: _LiveStream | None) -> None:
        outcome: dict[str, str] = {"error": ABANDONED}  # unless it ends otherwise
        if stream is not None:
            await stream.clear()  # a dead leader's leftovers
        try:
            async for item in produce():
                if isinstance(item, Completion):
                    outcome = {"end": json.dumps(_end_fields(item))}
                    run.finish(item)
                else:
                    run.push(item)
                    if stream is not None:
                        await stream.add(len(run.pieces), {"t": item})
        except RagError as exc:
            outcome = {"error": str(exc)}
            raise
        finally:
            if stream is not None:
                await finish_even_if_cancelled(stream.add(len(run.pieces) + 1, outcome, end=True))

    async def _follow(
        self, lock: RedisLock, stream: _LiveStream, deadline: float, run: _Run
    ) -> bool:
        """Follow another process's generation into ``run``. True: ``run`` finished; False: the
        leader is gone (its lock expired, or Redis is), so this process may take over."""
        last_id: bytes | str = "0"
        digest = hashlib.sha256()
        while True:
            # None: the read failed or came late; read again from the same place, unless the
            # lock check below finds the leader (or Redis) gone
            batches = await stream.read(last_id, self._poll_s) or []
            if batches:  # progress: the wait is for the next piece, not for the whole answer
                deadline = time.monotonic() + self._wait_s
            for _, entries in batches:
                for entry_id, fields in entries:
                    if int(entry_id.split(b"-")[0]) != len(run.pieces) + 1:
                        raise FlightFailedError("a piece of the answer being relayed is missing")
                    last_id = entry_id
                    if b"t" in fields:
                        piece = fields[b"t"].decode()
                        digest.update(piece.encode())
                        run.push(piece)
                    elif b"end" in fields:
                        run.finish(_checked_completion(run.pieces, digest, fields[b"end"]))
                        return True
                    else:
                        error = fields.get(b"error", b"").decode()
                        if error == ABANDONED:
                            return False
                        raise FlightFailedError(error or "the answer being generated failed")
            if not batches:
                if not await lock.exists():  # expired (the leader died), or Redis is away
                    return False
                if time.monotonic() >= deadline:
                    raise FlightTimeoutError(
                        f"waited {self._wait_s:.0f} s for an identical answer being generated"
                    )


class _LiveStream:
    """The Redis Stream a leader appends an answer's pieces to: piece ``n`` under the entry id
    ``n-0``, so a lost append leaves a gap that followers see."""

    def __init__(self, redis: RedisGateway, name: str, ttl_s: int) -> None:
        self._redis, self.name, self._ttl_s = redis, name, ttl_s

    async def clear(self) -> None:
        await self._redis.delete(self.name)

    async def add(self, n: int, fields: dict[str, str], *, end: bool = False) -> None:
        """Entry ``n``; the end entry also gives the stream its TTL."""
        await self._redis.stream_add(
            self.name, f"{n}-0", fields, ttl_s=self._ttl_s if end else None
        )

    async def read(self, after: bytes | str, block_s: float) -> StreamBatches | None:
        return await self._redis.stream_read(self.name, after, block_s)


def _end_fields(completion: Completion) -> dict[str, Any]:
    return {
        "prompt_tokens": completion.usage.prompt_tokens,
        "completion_tokens": completion.usage.completion_tokens,
        "finish_reason": completion.finish_reason,
        "model": completion.model,
        "pieces": len(completion.pieces),
        "sha256": hashlib.sha256(completion.text.encode()).hexdigest(),
    }


def _checked_completion(pieces: list[str], digest: Any, raw: bytes) -> Completion:
    """The relayed answer, if it is exactly the one generated (count and hash agree)."""
    try:
        fields = json.loads(raw)
        if fields["pieces"] != len(pieces) or fields["sha256"] != digest.hexdigest():
            raise FlightFailedError("the relayed answer differs from the one generated")
        return Completion(
            text="".join(pieces),
            pieces=tuple(pieces),
            usage=Usage(int(fields["prompt_tokens"]), int(fields["completion_tokens"])),
            finish_reason=str(fields["finish_reason"]),
            model=str(fields["model"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise FlightFailedError("the end of the relayed answer is unreadable") from exc
