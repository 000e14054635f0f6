"""The four faults, each started at its point of the run: restart, stall, slow and burst (see
the package's docstring)."""

from __future__ import annotations

import asyncio
import time

from .clients import Session, ask, ask_stream
from .servers import RedisProcess

FAULTS = ("restart", "stall", "slow", "burst")


def schedule(faults: list[str], duration_s: float) -> dict[str, float]:
    """When each fault starts, from the start of the run: in turn after a quiet first stretch,
    evenly over the run."""
    return {f: duration_s * (i + 1) / (len(faults) + 1.5) for i, f in enumerate(faults)}


class FaultInjector:
    """Starts one fault at a time on the run's Redis and clients, recording when it started."""

    def __init__(self, *, session: Session, server: RedisProcess, down_s: float) -> None:
        self.session, self.server, self.down_s = session, server, down_s

    async def inject(self, fault: str, at_s: float) -> None:
        """Wait until ``at_s`` into the run, then run ``fault`` (one of ``FAULTS``)."""
        s = self.session
        await asyncio.sleep(s.started + at_s - time.monotonic())
        s.run.faults[fault] = time.monotonic() - s.started
        actions = {
            "restart": self.restart,
            "stall": self.stall,
            "slow": self.slow,
            "burst": self.burst,
        }
        await actions[fault]()

    async def restart(self) -> None:
        """Kill Redis, and start it again, empty, ``down_s`` later."""
        run = self.session.run
        run.restarted_at_s = run.faults["restart"]
        self.server.kill()
        await asyncio.sleep(self.down_s)
        await asyncio.to_thread(self.server.start)
        run.back_at_s = time.monotonic() - self.session.started

    async def stall(self) -> None:
        """Redis answers nobody for 2 s."""
        await asyncio.to_thread(self.server.stall, 2.0)

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
