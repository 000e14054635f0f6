"""The faults, each started at its point of the run: restart, stall, the two document changes
(replace-refused, replace-rollback), slow and burst (see the package's docstring)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import redis

from .clients import Session, ask, ask_stream
from .documents import post_document, watched
from .servers import RedisProcess

FAULTS = ("restart", "stall", "replace-refused", "replace-rollback", "slow", "burst")


def schedule(faults: list[str], duration_s: float) -> dict[str, float]:
    """When each fault starts, from the start of the run: in turn after a quiet first stretch,
    evenly over the run."""
    return {f: duration_s * (i + 1) / (len(faults) + 1.5) for i, f in enumerate(faults)}


@dataclass(frozen=True, kw_only=True)
class FaultTimes:
    """How long the faults last, from the command line."""

    down_s: float  # Redis down in restart and replace-rollback
    stall_s: float  # DEBUG SLEEP
    refuse_s: float  # Redis refusing writes, from the replace on


class FaultInjector:
    """Starts one fault at a time on the run's Redis and clients, recording when it started."""

    def __init__(self, *, session: Session, server: RedisProcess, times: FaultTimes) -> None:
        self.session, self.server, self.times = session, server, times

    async def inject(self, fault: str, at_s: float) -> None:
        """Wait until ``at_s`` into the run, then run ``fault`` (one of ``FAULTS``)."""
        s = self.session
        await asyncio.sleep(s.started + at_s - time.monotonic())
        s.run.faults[fault] = self._now()
        actions = {
            "restart": self.restart,
            "stall": self.stall,
            "replace-refused": self.replace_refused,
            "replace-rollback": self.replace_rollback,
            "slow": self.slow,
            "burst": self.burst,
        }
        await actions[fault]()

    def _now(self) -> float:
        return time.monotonic() - self.session.started

    async def restart(self) -> None:
        """Kill Redis, and start it again, empty, ``down_s`` later."""
        self.server.kill()
        await asyncio.sleep(self.times.down_s)
        await asyncio.to_thread(self.server.start)
        self.session.run.redis_back_at_s["restart"] = self._now()

    async def stall(self) -> None:
        """Redis answers nobody for ``stall_s``."""
        await asyncio.to_thread(self.server.stall, self.times.stall_s)
        self.session.run.redis_back_at_s["stall"] = self._now()

    async def replace_refused(self) -> None:
        """Replace the watched document while Redis refuses every write (``maxmemory`` 1,
        ``noeviction``), and let it refuse ``refuse_s`` longer; then lift the limit."""
        s, command = self.session, self.server.command
        policy = await asyncio.to_thread(self.server.config, "maxmemory-policy")
        await asyncio.to_thread(command, "CONFIG", "SET", "maxmemory-policy", "noeviction")
        await asyncio.to_thread(command, "CONFIG", "SET", "maxmemory", 1)
        try:  # the app's writes from now on are refused like this one
            await asyncio.to_thread(command, "SET", "faultrun:probe", "x")
            s.run.notes["replace-refused"] = "a probe SET was accepted: Redis did not refuse"
        except redis.ResponseError as exc:
            s.run.notes["replace-refused"] = f"a probe SET was refused: {exc}"
        try:
            doc = watched("replace-refused")
            s.run.changes.append(await post_document(s.http, doc, doc.after, s.started))
            await asyncio.sleep(self.times.refuse_s)
        finally:
            await asyncio.to_thread(command, "CONFIG", "SET", "maxmemory", 0)
            await asyncio.to_thread(command, "CONFIG", "SET", "maxmemory-policy", policy)
        s.run.redis_back_at_s["replace-refused"] = self._now()

    async def replace_rollback(self) -> None:
        """``SAVE``, kill Redis, replace the watched document while it is down, and ``down_s``
        after the kill start Redis again from that snapshot: the entries of before the change
        come back."""
        s = self.session
        await asyncio.to_thread(self.server.command, "SAVE")
        killed = time.monotonic()
        self.server.kill()
        doc = watched("replace-rollback")
        s.run.changes.append(await post_document(s.http, doc, doc.after, s.started))
        await asyncio.sleep(max(0.0, killed + self.times.down_s - time.monotonic()))
        await asyncio.to_thread(self.server.start, from_snapshot=True)
        s.run.redis_back_at_s["replace-rollback"] = self._now()
        keys = await asyncio.to_thread(self.server.command, "DBSIZE")
        s.run.notes["replace-rollback"] = f"Redis came back from the snapshot with {keys} keys"

    async def slow(self) -> None:
        """5 slow readers of new questions, each followed 1 s later by an ``/ask`` of its
        question; readers still reading 15 s after the deadline leave."""
        s = self.session
        readers, followers = [], []
        for _ in range(5):
            query = s.new_question()
            readers.append(asyncio.create_task(ask_stream(s.http, query, s.started, "slow", 0.5)))
            await asyncio.sleep(1.0)
            followers.append(asyncio.create_task(ask(s.http, query, s.started, "after-slow")))
        s.run.outcomes.extend(await asyncio.gather(*followers))
        await asyncio.sleep(max(0.0, s.deadline + 15 - time.monotonic()))
        for task in readers:
            task.cancel()  # a slow reader still reading well after the run leaves
        s.run.outcomes.extend(await asyncio.gather(*readers))

    async def burst(self) -> None:
        """200 distinct new questions at once, by ``/ask``."""
        s = self.session
        questions = [s.new_question() for _ in range(200)]
        s.run.outcomes.extend(
            await asyncio.gather(*(ask(s.http, q, s.started, "burst") for q in questions))
        )
