"""Cached ``/ask`` over real HTTP against a bare route doing the least a hit can: validate the same
JSON body and return one ~4 KB value from one Redis GET. Both servers run as separate processes
(one uvicorn worker each) on the same Redis; ``wrk`` (Debian's) drives them in interleaved rounds
at 1 and 32 connections, and the script prints p50/p99 latency and req/s with the ratios.

    python scripts/bench_http_hits.py [--rounds 3] [--duration 5]

Without ``wrk`` on PATH it says so and stops (``apt-get install wrk``). Needs a Redis
(``--redis-url``, default the machine's 127.0.0.1:6379; keys under a fresh namespace)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.responses import Response

from services.schemas import AskRequest

QUERY = "How long are LLM answers cached?"
REWORDINGS = [  # tried in turn for the semantic-hit path: the first one the rule serves
    "How long are the LLM answers cached?",
    "For how long are LLM answers cached?",
    "How long are LLM answers kept in the cache?",
]
LUA = (  # wrk's request: a POST of the cached question
    'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
    f"wrk.body = {json.dumps(json.dumps({'query': QUERY}))}\n"
)


def bare_app(redis_url: str, key: str) -> FastAPI:
    """The floor: the same request model, one GET, the bytes back."""
    app = FastAPI()
    client = aioredis.Redis.from_url(redis_url)

    @app.post("/ask")
    async def ask(body: AskRequest) -> Response:
        return Response(await client.get(key), media_type="application/json")

    return app


def serve_bare(port: int, redis_url: str, key: str) -> None:
    import uvicorn

    uvicorn.run(bare_app(redis_url, key), host="127.0.0.1", port=port, log_level="warning")


def wait_ready(url: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.post(f"{url}/ask", json={"query": QUERY}, timeout=120).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout_s:.0f} s")


def run_wrk(url: str, connections: int, duration_s: int, script: Path) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1" if connections == 1 else "-t2",
            f"-c{connections}",
            f"-d{duration_s}s",
            "--latency",
            "-s",
            str(script),
            f"{url}/ask",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[str, float] = {}
    for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", out, re.M):
        found[pct] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "p50": found["50"],
        "p99": found["99"],
        "rps": rps,
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="instead: hit throughput of 1 and of N `rag serve` processes on one Redis",
    )
    parser.add_argument("--serve-bare", nargs=2, metavar=("PORT", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(int(args.serve_bare[0]), args.redis_url, args.serve_bare[1])
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH: apt-get install wrk")
    if args.workers:
        scale(args)
    else:
        run(args)


def start_rag(redis_url: str, namespace: str) -> tuple[subprocess.Popen[bytes], str, str]:
    """A `rag serve` process with a local-mode Qdrant folder of its own, on the shared Redis."""
    from services.serving import free_port

    port, data_dir = free_port(), tempfile.mkdtemp(prefix="bench-http-")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RAG_REDIS_URL": redis_url,
        "RAG_NAMESPACE": namespace,
        "RAG_DATA_DIR": data_dir,
    }
    rag = str(Path(sys.executable).with_name("rag"))
    cmd = [rag, "serve", "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(cmd, env=env), f"http://127.0.0.1:{port}", data_dir


def scale(args: argparse.Namespace) -> None:
    """Hits per second of 1 process, then of ``--workers`` processes driven together (32
    connections in all, split between them), in interleaved rounds."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    started = [start_rag(args.redis_url, namespace) for _ in range(args.workers)]
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(LUA)
    try:
        for _, url, _ in started:
            wait_ready(url)
        totals: dict[int, list[float]] = {}
        for _ in range(args.rounds):
            for n in (1, args.workers):
                urls = [url for _, url, _ in started[:n]]
                with ThreadPoolExecutor(n) as pool:
                    runs = pool.map(run_wrk, urls, [32 // n] * n, [args.duration] * n, [script] * n)
                    totals.setdefault(n, []).append(sum(r["rps"] for r in runs))
        for n, rps in totals.items():
            print(f"{n} process(es): {statistics.median(rps):.0f} cached /ask per s (median)")
    finally:
        script.unlink()
        for proc, _, data_dir in started:
            proc.terminate()
            proc.wait(timeout=30)
            shutil.rmtree(data_dir, ignore_errors=True)


def run(args: argparse.Namespace) -> None:
    from services.serving import free_port

    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    rag_port, bare_port = free_port(), free_port()
    data_dir = tempfile.mkdtemp(prefix="bench-http-")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RAG_REDIS_URL": args.redis_url,
        "RAG_NAMESPACE": namespace,
        "RAG_DATA_DIR": data_dir,
        # the semantic-hit path is measured on the static rule ("on"); the default (shadow)
        # never serves one
        "RAG_SEMANTIC_MODE": "on",
    }
    rag_cmd = [
        str(Path(sys.executable).with_name("rag")),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(rag_port),
    ]
    procs = [subprocess.Popen(rag_cmd, env=env)]
    try:
        rag_url, bare_url = f"http://127.0.0.1:{rag_port}", f"http://127.0.0.1:{bare_port}"
        wait_ready(rag_url)
        body = httpx.post(f"{rag_url}/ask", json={"query": QUERY}, timeout=60).content
        assert json.loads(body)["cache"]["llm"] == "hit", "the warm-up answer was not cached"
        key = f"rag:{namespace}:bench-bare-value"
        import redis

        redis.Redis.from_url(args.redis_url).set(key, body, ex=3600)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--redis-url",
                    args.redis_url,
                    "--serve-bare",
                    str(bare_port),
                    key,
                ],
                env=env,
            )
        )
        wait_ready(bare_url)
        report(measure(args, rag_url, bare_url), len(body))
        other_paths(rag_url)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)


def measure(
    args: argparse.Namespace, rag_url: str, bare_url: str
) -> dict[str, list[dict[str, float]]]:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(LUA)
    results: dict[str, list[dict[str, float]]] = {}
    for round_ in range(args.rounds):
        for connections in (1, 32):
            for name, url in (("rag", rag_url), ("bare", bare_url)):  # interleaved
                found = run_wrk(url, connections, args.duration, script)
                results.setdefault(f"{name}@{connections}", []).append(found)
                print(
                    f"round {round_ + 1} {name:<4} c={connections:<2} p50 {found['p50']:.2f} ms "
                    f"p99 {found['p99']:.2f} ms {found['rps']:.0f} req/s",
                    file=sys.stderr,
                )
    script.unlink()
    return results


def report(results: dict[str, list[dict[str, float]]], body_bytes: int) -> None:
    def med(name: str, field: str) -> float:
        return statistics.median(r[field] for r in results[name])

    print(
        f"\ncached /ask vs bare route (one Redis GET of the same {body_bytes}-byte body), "
        "medians over rounds, wrk:"
    )
    print(
        f"{'':<8}{'rag p50':>9}{'bare p50':>10}{'ratio':>7}{'rag p99':>9}{'bare p99':>10}"
        f"{'ratio':>7}{'rag r/s':>9}{'bare r/s':>10}{'ratio':>7}"
    )
    for c in (1, 32):
        rag, bare = f"rag@{c}", f"bare@{c}"
        row = [
            med(rag, "p50"),
            med(bare, "p50"),
            med(rag, "p99"),
            med(bare, "p99"),
            med(rag, "rps"),
            med(bare, "rps"),
        ]
        print(
            f"c={c:<6}{row[0]:>9.2f}{row[1]:>10.2f}{row[0] / row[1]:>7.2f}{row[2]:>9.2f}"
            f"{row[3]:>10.2f}{row[2] / row[3]:>7.2f}{row[4]:>9.0f}{row[5]:>10.0f}"
            f"{row[4] / row[5]:>7.2f}"
        )
    errors = sum(r["errors"] for rs in results.values() for r in rs)
    print(f"non-2xx responses: {errors:.0f}")


def other_paths(rag_url: str, n: int = 200) -> None:
    """Sequential timings (httpx, in this process): the cached stream's first token, and a
    semantic hit (a reworded question served an earlier answer) beside an exact hit."""
    first_token = []
    with httpx.Client(base_url=rag_url, timeout=60) as client:
        for _ in range(n):
            started = time.perf_counter()
            with client.stream("GET", "/ask/stream", params={"query": QUERY}) as response:
                for line in response.iter_lines():
                    if line == "event: token":
                        first_token.append((time.perf_counter() - started) * 1000)
                        break
        print(f"cached /ask/stream, time to the first token (httpx): {_p50_p99(first_token)}")
        semantic_path(client, n)


def semantic_path(client: httpx.Client, n: int) -> None:
    def ask(query: str) -> tuple[float, str]:
        started = time.perf_counter()
        r = client.post("/ask", json={"query": query, "cache": {"semantic": True}})
        return (time.perf_counter() - started) * 1000, r.json()["cache"]["llm"]

    ask(QUERY)  # the exact entry is there; this puts the question in the semantic index
    reworded = next((q for q in REWORDINGS if ask(q)[1] == "semantic"), None)
    if reworded is None:
        print("semantic hit: no rewording was served by the semantic cache; not measured")
        return
    runs: dict[str, list[float]] = {"exact hit": [], "semantic hit": []}
    outcomes: set[str] = set()
    for _ in range(n):  # interleaved
        for name, query in (("exact hit", QUERY), ("semantic hit", reworded)):
            ms, llm = ask(query)
            runs[name].append(ms)
            outcomes.add(f"{name}: {llm}")
    for name, values in runs.items():
        print(f"/ask {name} with cache.semantic (httpx): {_p50_p99(values)}")
    print(f"  ({reworded!r} for {QUERY!r}; statuses seen: {sorted(outcomes)})")


def _p50_p99(values: list[float]) -> str:
    ordered = sorted(values)
    return (
        f"p50 {ordered[len(ordered) // 2]:.2f} ms, p99 {ordered[int(0.99 * len(ordered))]:.2f} ms"
    )


if __name__ == "__main__":
    main()
