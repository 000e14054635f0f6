"""The requests: one ``/ask``, one ``/ask/stream`` (its events parsed, read fast or slowly), and
the steady clients that loop over them until the end of the load window."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from .outcomes import Outcome, Run

HOT = [
    "How long are LLM answers cached?",
    "What happens when a client disconnects?",
    "What is stale-while-revalidate?",
    "Why are errors never cached?",
    "How are cache keys built?",
]
TOPICS = ["embeddings", "search results", "answers", "Redis", "the semantic cache", "sessions"]


@dataclass
class Session:
    """What the clients and the faults of one run share: the HTTP client, the clock, the record
    and the questions."""

    http: httpx.AsyncClient
    run: Run
    rng: random.Random
    started: float  # ``time.monotonic()`` when the load window opened
    deadline: float  # no steady request starts after this
    hot: list[str]  # the questions asked once before the clock started, so cached
    asked: int = 0  # new questions made so far

    def new_question(self) -> str:
        """A question never asked before in this run."""
        self.asked += 1
        return f"Question {self.asked}: how do the caches handle {self.rng.choice(TOPICS)}?"


async def ask(http: httpx.AsyncClient, query: str, started: float, role: str = "") -> Outcome:
    t0 = time.monotonic()
    try:
        r = await http.post("/ask", json={"query": query})
    except httpx.HTTPError as exc:
        return Outcome(t0 - started, query, 0, _ms(t0), error=repr(exc), role=role)
    outcome = Outcome(t0 - started, query, r.status_code, _ms(t0), role=role)
    if r.status_code == 200:
        body = r.json()
        outcome.llm, outcome.answer = body["cache"]["llm"], body["answer"]
        outcome.sources, outcome.sources_at_s = _texts(body["sources"]), outcome.done_s
    else:
        outcome.error = r.text[:200]
    return outcome


async def ask_stream(
    http: httpx.AsyncClient, query: str, started: float, role: str = "", read_delay_s: float = 0
) -> Outcome:
    """One ``/ask/stream``, its events parsed; ``read_delay_s`` between 64-byte reads makes a
    slow reader."""
    t0 = time.monotonic()
    outcome = Outcome(t0 - started, query, 0, 0.0, endpoint="/ask/stream", role=role)
    tokens: list[str] = []
    try:
        async with http.stream("POST", "/ask/stream", json={"query": query}) as r:
            outcome.status = r.status_code
            if r.status_code != 200:
                outcome.error = (await r.aread()).decode()[:200]
            else:
                outcome.end = "cut"  # until a done or error event says otherwise
                async for event, data in _events(r, read_delay_s):
                    if event == "meta":
                        outcome.llm, outcome.sources = data["cache"]["llm"], _texts(data["sources"])
                        outcome.sources_at_s = time.monotonic() - started
                    elif event == "token":
                        tokens.append(data["text"])
                    elif event == "done":
                        outcome.end, outcome.llm = "done", data["cache"]["llm"]
                    elif event == "error":
                        outcome.end, outcome.error = "error", f"{data['status']} {data['detail']}"
    except httpx.HTTPError as exc:
        outcome.error = repr(exc)
    except asyncio.CancelledError:
        outcome.end = "left"  # the run ended while this slow reader still read
    outcome.latency_ms, outcome.answer = _ms(t0), "".join(tokens)
    return outcome


async def _events(r: httpx.Response, read_delay_s: float) -> AsyncIterator[tuple[str, Any]]:
    buffer = ""
    chunks = r.aiter_text(64) if read_delay_s else r.aiter_text()
    async for chunk in chunks:
        buffer += chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            fields = dict(
                line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
            )
            if "event" in fields:
                yield fields["event"], json.loads(fields.get("data", "{}"))
        if read_delay_s:
            await asyncio.sleep(read_delay_s)


def _texts(sources: list[dict[str, Any]]) -> list[str]:
    return [str(source["text"]) for source in sources]


def _ms(t0: float) -> float:
    return (time.monotonic() - t0) * 1000


async def steady(session: Session, misses: bool) -> None:
    """One steady client: until the deadline, a new question (``misses``) or a hot one, by
    ``/ask`` or ``/ask/stream`` at random."""
    while time.monotonic() < session.deadline:
        query = session.new_question() if misses else session.rng.choice(session.hot)
        call = ask if session.rng.random() < 0.5 else ask_stream
        session.run.outcomes.append(await call(session.http, query, session.started))
