"""The fault run: a bounded load on loopback, with faults in turn, and what clients saw.

It starts everything itself, on 127.0.0.1 only: a private ``redis-server`` (nothing on disk), and
the app as a separate ``rag serve`` process using it (real MiniLM, Qdrant local mode, SmolLM2 on
llama.cpp, sample corpus, default deadlines). ``--clients`` clients loop until the deadline, each
request an ``/ask`` or an ``/ask/stream`` at random: ``--miss-clients`` of them ask questions never
asked before (embedding, search and generation), the others a few hot questions (asked once before
the clock starts, so they are cached). Meanwhile, at fixed points of the run, in turn:

- **restart**: the Redis process is killed and started again, empty, ``--down-s`` later;
- **stall**: Redis answers nothing for 2 s (``DEBUG SLEEP 2``);
- **slow**: 5 streams of new questions read by clients that take ~0.5 s per 64 bytes, and 1 s
  after each, a normal client asks the same question by ``/ask``;
- **burst**: 200 distinct new questions at once by ``/ask``.

It reports requests by endpoint and status, 5xx other than the documented 503 (shed load), streams
cut without an ``error`` event, texts that differ from the answer they should equal, seconds until
hits resume after Redis returns, and the latency of cached answers (p50/p99) in each fault's
window. A text differs when: a cached answer (``llm: hit``) is not one generated for that question
in the run (a mixed-up key, a half-written entry, a stale replay); two requests of one question
that overlapped in time both waited for a generation and got different texts (a follower that
diverged); a slow reader's text differs from that of the ``/ask`` that followed it. Exit status 1
when any of the three counts is not 0.

Usage: python scripts/load.py [--duration 60] [--clients 50] [--miss-clients 8]
       [--faults restart,stall,slow,burst] [--max-tokens 24] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
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
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from services.serving import free_port

HOT = [
    "How long are LLM answers cached?",
    "What happens when a client disconnects?",
    "What is stale-while-revalidate?",
    "Why are errors never cached?",
    "How are cache keys built?",
]
TOPICS = ["embeddings", "search results", "answers", "Redis", "the semantic cache", "sessions"]
FAULTS = ("restart", "stall", "slow", "burst")
WINDOW_S = 8.0  # how long after a fault starts its requests are counted as "during" it


def _wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


class RedisProcess:
    """A private redis-server on a loopback port that can be killed, started again and stalled."""

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
        args += ["no", "--dir", str(self.workdir), "--enable-debug-command", "local"]
        self.process = subprocess.Popen(
            [self.binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_for_port(self.port, 10)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stall(self, seconds: float) -> None:
        """Block the server for ``seconds`` (it answers nobody meanwhile)."""
        with redis.Redis(port=self.port, socket_timeout=seconds + 10) as client:
            client.execute_command("DEBUG", "SLEEP", str(seconds))


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
    at_s: float  # when the request started, from the start of the run
    query: str
    status: int  # HTTP status; 0: no response at all
    latency_ms: float
    llm: str = ""
    answer: str = ""
    error: str = ""
    endpoint: str = "/ask"
    end: str = ""  # streams: "done", "error" (its status in ``error``), "cut" or "left"
    role: str = ""  # "burst", "slow", "after-slow" or "" (the steady clients)

    @property
    def done_s(self) -> float:
        return self.at_s + self.latency_ms / 1000


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    warmup: list[Outcome] = field(default_factory=list)  # the hot questions, asked once first
    faults: dict[str, float] = field(default_factory=dict)  # fault -> when it started
    restarted_at_s: float | None = None
    back_at_s: float | None = None
    duration_s: float = 0.0  # the load window: every steady request started within it
    elapsed_s: float = 0.0  # until the last request answered (clients finish what they started)


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
                        outcome.llm = data["cache"]["llm"]
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


async def _events(r: httpx.Response, read_delay_s: float) -> Any:
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


def _ms(t0: float) -> float:
    return (time.monotonic() - t0) * 1000


async def drive(url: str, server: RedisProcess, args: argparse.Namespace) -> Run:
    run, rng = Run(), random.Random(args.seed)
    counter = 0
    faults = [f for f in args.faults.split(",") if f]
    # faults in turn after a quiet first stretch, evenly over the run
    starts = {f: args.duration * (i + 1) / (len(faults) + 1.5) for i, f in enumerate(faults)}

    def new_question() -> str:
        nonlocal counter
        counter += 1
        return f"Question {counter}: how do the caches handle {rng.choice(TOPICS)}?"

    async def steady(http: httpx.AsyncClient, misses: bool) -> None:
        while time.monotonic() < deadline:
            query = new_question() if misses else rng.choice(HOT)
            call = ask if rng.random() < 0.5 else ask_stream
            run.outcomes.append(await call(http, query, started))

    async def at(fault: str) -> None:
        await asyncio.sleep(started + starts[fault] - time.monotonic())
        run.faults[fault] = time.monotonic() - started

    async def restart() -> None:
        await at("restart")
        run.restarted_at_s = run.faults["restart"]
        server.kill()
        await asyncio.sleep(args.down_s)
        await asyncio.to_thread(server.start)
        run.back_at_s = time.monotonic() - started

    async def stall() -> None:
        await at("stall")
        await asyncio.to_thread(server.stall, 2.0)

    async def slow() -> None:
        await at("slow")
        readers, followers = [], []
        for _ in range(5):
            query = new_question()
            readers.append(asyncio.create_task(ask_stream(http, query, started, "slow", 0.5)))
            await asyncio.sleep(1.0)
            followers.append(asyncio.create_task(ask(http, query, started, "after-slow")))
        run.outcomes.extend(await asyncio.gather(*followers))
        await asyncio.sleep(max(0.0, deadline + 15 - time.monotonic()))
        for task in readers:
            task.cancel()  # a slow reader still reading well after the run leaves
        run.outcomes.extend(await asyncio.gather(*readers))

    async def burst() -> None:
        await at("burst")
        questions = [new_question() for _ in range(200)]
        run.outcomes.extend(
            await asyncio.gather(*(ask(http, q, started, "burst") for q in questions))
        )

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=300)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        run.warmup = [await ask(http, query, time.monotonic()) for query in HOT]
        started = time.monotonic()
        deadline = started + args.duration
        jobs = [steady(http, misses=i < args.miss_clients) for i in range(args.clients)]
        actions = {"restart": restart, "stall": stall, "slow": slow, "burst": burst}
        jobs += [actions[f]() for f in faults]
        await asyncio.gather(*jobs)
        run.duration_s, run.elapsed_s = args.duration, time.monotonic() - started
    return run


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _latency(values: list[float]) -> dict[str, float | int]:
    return {
        "requests": len(values),
        "p50_ms": round(statistics.median(values), 2) if values else 0.0,
        "p99_ms": round(percentile(values, 0.99), 2),
    }


def differing_texts(run: Run) -> list[Outcome]:
    """Answers that differ from the one they should equal (see the module's docstring)."""
    everything = [*run.warmup, *run.outcomes]
    answered = [o for o in everything if o.status == 200 and o.end not in ("cut", "error", "left")]
    generated: dict[str, set[str]] = defaultdict(set)
    for o in answered:
        if o.llm != "hit":
            generated[o.query].add(o.answer)
    wrong = [o for o in answered if o.llm == "hit" and o.answer not in generated[o.query]]
    by_query: dict[str, list[Outcome]] = defaultdict(list)
    for o in answered:
        if o.llm == "miss":
            by_query[o.query].append(o)
    for same in by_query.values():
        same.sort(key=lambda o: o.at_s)
        # overlapped in time: one generation, so one text
        wrong += [
            b for a, b in itertools.pairwise(same) if b.at_s < a.done_s and a.answer != b.answer
        ]
    slow = {o.query: o for o in answered if o.role == "slow"}
    wrong += [
        o
        for o in answered
        if o.role == "after-slow" and o.query in slow and o.answer != slow[o.query].answer
    ]
    return list({id(o): o for o in wrong}.values())


def summarize(run: Run) -> dict[str, Any]:
    outcomes = run.outcomes
    by_status = Counter(f"{o.endpoint} {o.status or 'no response'}" for o in outcomes)
    streams = [o for o in outcomes if o.endpoint == "/ask/stream" and o.status == 200]
    stream_ends = Counter(o.end for o in streams)
    server_errors = [o for o in outcomes if o.status >= 500 and o.status != 503]
    server_errors += [o for o in outcomes if o.end == "error" and not o.error.startswith("503")]
    no_response = [o for o in outcomes if o.status == 0 and o.end != "left"]
    cut = [o for o in outcomes if o.end == "cut"]
    wrong = differing_texts(run)
    steady = [o for o in outcomes if not o.role]
    hits_after = [
        o.done_s
        for o in steady
        if run.back_at_s is not None and o.llm == "hit" and o.at_s >= run.back_at_s
    ]
    quiet_until = min(run.faults.values(), default=run.duration_s)
    windows = {"none (before the first fault)": (0.0, max(0.0, quiet_until - 1.0))}
    windows |= {name: (at, at + WINDOW_S) for name, at in run.faults.items()}
    during = {
        name: {
            status: _latency(
                [o.latency_ms for o in steady if lo <= o.at_s < hi and o.llm == status]
            )
            for status in ("hit", "bypass", "miss")
        }
        for name, (lo, hi) in windows.items()
    }
    burst = [o for o in outcomes if o.role == "burst"]
    return {
        "requests": len(outcomes),
        "duration_s": run.duration_s,
        "elapsed_s": round(run.elapsed_s, 1),
        "throughput_rps": round(len(steady) / run.duration_s, 2) if run.duration_s else 0.0,
        "by_endpoint_and_status": dict(sorted(by_status.items())),
        "stream_ends": dict(sorted(stream_ends.items())),
        "by_llm_status": {
            name: _latency([o.latency_ms for o in steady if (o.llm or "failed") == name])
            for name in sorted({o.llm or "failed" for o in steady})
        },
        "server_errors_other_than_503": len(server_errors),
        "no_response": len(no_response),
        "streams_cut_without_error": len(cut),
        "differing_texts": len(wrong),
        "examples": [
            f"{o.endpoint} {o.status} {o.end} {o.error or o.query}"
            for o in [*server_errors, *no_response, *cut, *wrong][:8]
        ],
        "faults_started_at_s": {name: round(at, 1) for name, at in run.faults.items()},
        "redis_restart": {
            "killed_at_s": run.restarted_at_s,
            "back_at_s": None if run.back_at_s is None else round(run.back_at_s, 2),
            # from Redis answering again to the first answer served from the cache
            "hits_resumed_after_s": (
                round(min(hits_after) - run.back_at_s, 2)
                if hits_after and run.back_at_s is not None
                else None
            ),
        },
        "latency_during_fault_ms": during,
        "burst": {
            "statuses": dict(Counter(str(o.status) for o in burst)),
            "503_p50_ms": _latency([o.latency_ms for o in burst if o.status == 503])["p50_ms"],
        },
        "slow_readers": {
            "ends": dict(Counter(o.end or str(o.status) for o in outcomes if o.role == "slow")),
            "their_ask_followers": _latency(
                [o.latency_ms for o in outcomes if o.role == "after-slow"]
            ),
        },
    }


def failed(summary: dict[str, Any]) -> bool:
    return bool(
        summary["server_errors_other_than_503"]
        or summary["no_response"]
        or summary["streams_cut_without_error"]
        or summary["differing_texts"]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--clients", type=int, default=50, help="concurrent steady clients")
    parser.add_argument("--miss-clients", type=int, default=8, help="of them, asking new questions")
    parser.add_argument(
        "--faults", default=",".join(FAULTS), help=f"in this order, any of {','.join(FAULTS)}"
    )
    parser.add_argument("--down-s", type=float, default=2.0, help="how long Redis stays down")
    parser.add_argument("--max-tokens", type=int, default=24, help="LLM answer length")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("--app-log", type=Path, help="keep the app's log here")
    parser.add_argument("--outcomes", type=Path, help="every request's outcome, as JSON lines")
    args = parser.parse_args()
    unknown = set(args.faults.split(",")) - set(FAULTS) - {""}
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}: choose from {', '.join(FAULTS)}")

    with tempfile.TemporaryDirectory(prefix="rag-load-") as tmp:
        server = RedisProcess(Path(tmp))
        server.start()
        try:
            with running_app(server.url, Path(tmp), args.max_tokens) as url:
                print(
                    f"app at {url}, Redis at {server.url}; {args.clients} clients for "
                    f"{args.duration:.0f} s; faults: {args.faults or 'none'}",
                    file=sys.stderr,
                )
                run = asyncio.run(drive(url, server, args))
                log = (Path(tmp) / "app.log").read_text(errors="replace")
                if args.app_log:
                    args.app_log.write_text(log)
        finally:
            server.kill()
    if args.outcomes:
        lines = (json.dumps(dataclasses.asdict(o)) + "\n" for o in run.outcomes)
        args.outcomes.write_text("".join(lines))
    summary = summarize(run)
    summary["app_log_tracebacks"] = log.count("Traceback (most recent call last)")
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 1 if failed(summary) else 0


if __name__ == "__main__":
    sys.exit(main())
