"""Bounded load test on loopback: N concurrent clients for a fixed duration, with a mix of cached
and uncached questions, while the Redis under the app is restarted mid-run.

It starts everything itself, on 127.0.0.1 only: a private ``redis-server`` (nothing on disk), and
the app as a separate ``rag serve`` process using it (real MiniLM, Qdrant local mode, SmolLM2 on
llama.cpp, sample corpus). Then each client loops until the deadline: ``--miss-clients`` of
them ask questions never asked before (misses: embedding, search and generation), the others ask
a few hot questions (each asked once before the clock starts, so they are cached). Split this
way, hits keep flowing while the misses queue at the LLM. At ``--restart-at`` of the run the
Redis process is killed and started again, empty, ``--down-s`` later: while it is down every
request is answered without the cache (``bypass``); then the hot questions miss once more and
hit again.

It reports throughput, latency p50/p99 per cache outcome, failed requests (anything but 200) and
wrong answers. An answer is wrong when it is served from the cache (``llm: hit``) but is not one
the LLM generated for that same question during the run: a mixed-up key, a half-written entry or
a stale replay after the restart would all show up. Exit status 1 when a request failed or an
answer was wrong.

Usage: python scripts/load.py [--duration 40] [--clients 8] [--miss-clients 2]
       [--restart-at 0.5] [--down-s 2] [--max-tokens 24] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.serving import free_port

HOT = [
    "How long are LLM answers cached?",
    "What happens when a client disconnects?",
    "What is stale-while-revalidate?",
    "Why are errors never cached?",
    "How are cache keys built?",
]
TOPICS = ["embeddings", "search results", "answers", "Redis", "the semantic cache", "sessions"]


def _wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


class RedisProcess:
    """A private redis-server on a loopback port that can be killed and started again."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not on PATH (apt-get install redis-server)")
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        self.process = subprocess.Popen(
            [self.binary, *args, "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, 10)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@contextmanager
def running_app(redis_url: str, data_dir: Path, max_tokens: int) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RAG_REDIS_URL": redis_url,
        "RAG_DATA_DIR": str(data_dir),
        "RAG_LLM_MAX_TOKENS": str(max_tokens),
        "RAG_NAMESPACE": f"load-{random.randrange(16**8):08x}",
    }
    rag = Path(sys.executable).with_name("rag")
    app = subprocess.Popen(
        [str(rag), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(data_dir / "app.log", "wb"),  # noqa: SIM115 - closed with the process
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            if app.poll() is not None:
                raise SystemExit(f"the app exited; see {data_dir / 'app.log'}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the app did not start within 300 s")
            time.sleep(0.5)
        yield url
    finally:
        app.terminate()
        try:
            app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            app.kill()


@dataclass
class Outcome:
    at_s: float
    query: str
    status: int
    latency_ms: float
    llm: str = ""
    answer: str = ""
    error: str = ""


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    warmup: list[Outcome] = field(default_factory=list)  # the hot questions, asked once first
    restarted_at_s: float | None = None
    back_at_s: float | None = None
    duration_s: float = 0.0  # the load window: every request started within it
    elapsed_s: float = 0.0  # until the last request answered (clients finish what they started)


async def ask(http: httpx.AsyncClient, query: str, started: float) -> Outcome:
    t0 = time.monotonic()
    try:
        r = await http.post("/ask", json={"query": query})
    except httpx.HTTPError as exc:
        return Outcome(t0 - started, query, 0, (time.monotonic() - t0) * 1000, error=repr(exc))
    outcome = Outcome(t0 - started, query, r.status_code, (time.monotonic() - t0) * 1000)
    if r.status_code == 200:
        body = r.json()
        outcome.llm, outcome.answer = body["cache"]["llm"], body["answer"]
    else:
        outcome.error = r.text[:200]
    return outcome


async def drive(url: str, redis: RedisProcess, args: argparse.Namespace) -> Run:
    run, rng = Run(), random.Random(args.seed)
    counter = 0

    def new_question() -> str:
        nonlocal counter
        counter += 1
        return f"Question {counter}: how do the caches handle {rng.choice(TOPICS)}?"

    async def client(http: httpx.AsyncClient, misses: bool) -> None:
        while time.monotonic() < deadline:
            query = new_question() if misses else rng.choice(HOT)
            run.outcomes.append(await ask(http, query, started))

    async def restart() -> None:
        await asyncio.sleep(args.duration * args.restart_at)
        run.restarted_at_s = time.monotonic() - started
        redis.kill()
        await asyncio.sleep(args.down_s)
        await asyncio.to_thread(redis.start)
        run.back_at_s = time.monotonic() - started

    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        run.warmup = [await ask(http, query, time.monotonic()) for query in HOT]
        started = time.monotonic()
        deadline = started + args.duration
        tasks = [client(http, misses=i < args.miss_clients) for i in range(args.clients)]
        if args.restart_at > 0:
            tasks.append(restart())
        await asyncio.gather(*tasks)
        run.duration_s, run.elapsed_s = args.duration, time.monotonic() - started
    return run


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def summarize(run: Run) -> dict[str, Any]:
    generated: dict[str, set[str]] = defaultdict(set)
    for o in [*run.warmup, *run.outcomes]:
        if o.status == 200 and o.llm != "hit":
            generated[o.query].add(o.answer)
    wrong = [o for o in run.outcomes if o.llm == "hit" and o.answer not in generated[o.query]]
    failed = [o for o in run.outcomes if o.status != 200]
    by_outcome: dict[str, list[float]] = defaultdict(list)
    for o in run.outcomes:
        by_outcome[o.llm or "failed"].append(o.latency_ms)
    outage = [
        o
        for o in run.outcomes
        if run.restarted_at_s is not None
        and run.back_at_s is not None
        and run.restarted_at_s <= o.at_s <= run.back_at_s
    ]
    latencies = [o.latency_ms for o in run.outcomes]
    hits_after = [
        o.at_s + o.latency_ms / 1000
        for o in run.outcomes
        if run.back_at_s is not None and o.llm == "hit" and o.at_s >= run.back_at_s
    ]
    return {
        "requests": len(run.outcomes),
        "duration_s": run.duration_s,
        "elapsed_s": round(run.elapsed_s, 1),
        "throughput_rps": round(len(run.outcomes) / run.duration_s, 2) if run.duration_s else 0.0,
        "p50_ms": round(statistics.median(latencies), 2) if latencies else 0.0,
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "by_llm_status": {
            name: {
                "requests": len(values),
                "p50_ms": round(statistics.median(values), 2),
                "p99_ms": round(percentile(values, 0.99), 2),
            }
            for name, values in sorted(by_outcome.items())
        },
        "failed_requests": len(failed),
        "failures": [f"{o.status} {o.error}" for o in failed[:5]],
        "wrong_answers": len(wrong),
        "redis_restart": {
            "killed_at_s": run.restarted_at_s,
            "back_at_s": run.back_at_s,
            "requests_started_while_down": len(outage),
            "their_llm_statuses": sorted({o.llm or "failed" for o in outage}),
            # from Redis answering again to the first answer served from the cache
            "hits_resumed_after_s": (
                round(min(hits_after) - run.back_at_s, 2)
                if hits_after and run.back_at_s is not None
                else None
            ),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of load")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--miss-clients", type=int, default=2, help="clients asking new questions")
    parser.add_argument("--restart-at", type=float, default=0.5, help="0 = no Redis restart")
    parser.add_argument("--down-s", type=float, default=2.0, help="how long Redis stays down")
    parser.add_argument("--max-tokens", type=int, default=24, help="LLM answer length")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rag-load-") as tmp:
        redis = RedisProcess(Path(tmp))
        redis.start()
        try:
            with running_app(redis.url, Path(tmp), args.max_tokens) as url:
                print(
                    f"app at {url}, Redis at {redis.url}; {args.clients} clients for "
                    f"{args.duration:.0f} s",
                    file=sys.stderr,
                )
                run = asyncio.run(drive(url, redis, args))
        finally:
            redis.kill()
    summary = summarize(run)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 1 if summary["failed_requests"] or summary["wrong_answers"] else 0


if __name__ == "__main__":
    sys.exit(main())
