"""The processes the run starts: a private ``redis-server`` and the app (``rag serve``)."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis

from services.serving import free_port


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

    @property
    def snapshot(self) -> Path:
        """Where ``SAVE`` writes (redis-server's default ``dbfilename`` in ``--dir``)."""
        return self.workdir / "dump.rdb"

    def start(self, *, from_snapshot: bool = False) -> None:
        """Start the server (no snapshots of its own, no AOF): empty, or ``from_snapshot``
        holding what the last ``SAVE`` wrote; returns once it answers ``PING``."""
        if not from_snapshot:
            self.snapshot.unlink(missing_ok=True)
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        args += ["no", "--dir", str(self.workdir), "--enable-debug-command", "local"]
        self.process = subprocess.Popen(
            [self.binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_for_port(self.port, 10)
        deadline = time.monotonic() + 10
        while True:  # a server loading a snapshot answers LOADING until it is done
            try:
                self.command("PING")
                return
            except redis.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def config(self, name: str) -> str:
        """One configuration parameter's value (``CONFIG GET``)."""
        with redis.Redis(port=self.port, socket_timeout=10, decode_responses=True) as client:
            return str(client.config_get(name)[name])

    def command(self, *args: str | int) -> Any:
        """One command on a connection of its own (the app's pool is not touched)."""
        with redis.Redis(port=self.port, socket_timeout=10) as client:
            return client.execute_command(*args)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stall(self, seconds: float) -> None:
        """Block the server for ``seconds`` (it answers nobody meanwhile)."""
        with redis.Redis(port=self.port, socket_timeout=seconds + 10) as client:
            client.execute_command("DEBUG", "SLEEP", str(seconds))


def _wait_until_healthy(app: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 300
    while True:
        if app.poll() is not None:
            raise SystemExit(f"the app exited; see {log}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the app did not start within 300 s")
        time.sleep(0.5)


@contextmanager
def running_app(redis_url: str, data_dir: Path, max_tokens: int) -> Iterator[str]:
    """``rag serve`` on a free loopback port over ``redis_url``, its stderr in
    ``data_dir / "app.log"``; yields its base URL once ``/healthz`` answers."""
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RAG_REDIS_URL": redis_url,
        "RAG_DATA_DIR": str(data_dir),
        "RAG_LLM_MAX_TOKENS": str(max_tokens),
        "RAG_NAMESPACE": f"load-{random.randrange(16**8):08x}",
        "RAG_ADMIN_API_KEY": "",  # POST /documents without a key (in development)
        "RAG_API_KEYS": "[]",  # /ask open: one tenant
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
        _wait_until_healthy(app, url, data_dir / "app.log")
        yield url
    finally:
        app.terminate()
        try:
            app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            app.kill()
