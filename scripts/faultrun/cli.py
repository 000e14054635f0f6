"""``python scripts/load.py``: options, the servers around one run, the files it writes, and its
exit status (1 when clients saw anything they must never see)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

from . import __doc__ as package_doc
from .drive import Plan, drive
from .faults import FAULTS, FaultTimes
from .outcomes import Run
from .servers import RedisProcess, running_app
from .summary import failed, summarize


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(package_doc or "").split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--clients", type=int, default=50, help="concurrent steady clients")
    parser.add_argument("--miss-clients", type=int, default=8, help="of them, asking new questions")
    parser.add_argument(
        "--faults", default=",".join(FAULTS), help=f"in this order, any of {','.join(FAULTS)}"
    )
    parser.add_argument("--down-s", type=float, default=2.0, help="how long Redis stays down")
    parser.add_argument("--stall-s", type=float, default=3.0, help="how long Redis stalls")
    parser.add_argument(
        "--refuse-s", type=float, default=4.0, help="how long Redis refuses writes after a replace"
    )
    parser.add_argument("--max-tokens", type=int, default=24, help="LLM answer length")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("--app-log", type=Path, help="keep the app's log here")
    parser.add_argument("--outcomes", type=Path, help="every request's outcome, as JSON lines")
    args = parser.parse_args(argv)
    unknown = set(args.faults.split(",")) - set(FAULTS) - {""}
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}: choose from {', '.join(FAULTS)}")
    return args


def _plan(args: argparse.Namespace) -> Plan:
    return Plan(
        duration_s=args.duration,
        clients=args.clients,
        miss_clients=args.miss_clients,
        faults=[f for f in args.faults.split(",") if f],
        times=FaultTimes(down_s=args.down_s, stall_s=args.stall_s, refuse_s=args.refuse_s),
        seed=args.seed,
    )


def _run_with_servers(args: argparse.Namespace) -> tuple[Run, str]:
    """Start Redis and the app in a temporary folder, drive one run, stop both; the run and the
    app's log."""
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
                run = asyncio.run(drive(url, server, _plan(args)))
                log = (Path(tmp) / "app.log").read_text(errors="replace")
                if args.app_log:
                    args.app_log.write_text(log)
        finally:
            server.kill()
    return run, log


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run, log = _run_with_servers(args)
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
