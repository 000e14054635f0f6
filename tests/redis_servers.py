"""Private ``redis-server`` processes for tests: a plain server that can be stopped and started
again on the same port (with AUTH or TLS through extra arguments), and a 3-master cluster.

Nothing is kept on disk (``--save ''``, ``--appendonly no``); each server writes its files under
its own temporary folder. Skips when ``redis-server`` is not on PATH."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.serving import free_port


def require_redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        pytest.skip("redis-server is not on PATH")
    return path


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port() -> int:
    """A free port for a cluster node: at most 55535, with the bus port (port + 10000) free too."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 55535)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class RedisServer:
    """One ``redis-server`` on 127.0.0.1:``port``; ``start``/``stop`` may be called repeatedly.
    ``args`` are extra command-line arguments (``--requirepass``, cluster options). With ``tls``
    (certificate, key and CA files) it speaks only TLS on ``port``."""

    workdir: Path
    port: int = field(default_factory=free_port)
    args: Sequence[str] = ()
    tls: tuple[Path, Path, Path] | None = None
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "redis.log").open("ab")
        if self.tls:
            cert, key, ca = self.tls
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            listen += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
            listen += ["--tls-ca-cert-file", str(ca)]
        else:
            listen = ["--port", str(self.port)]
        command = [
            require_redis_server(),
            *listen,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            *self.args,
        ]
        self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout_s
        while not _accepts(self.port):
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited: {(self.workdir / 'redis.log').read_text()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not listen on {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL); its data is gone (nothing is saved)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def redis_server(
    workdir: Path, *args: str, start: bool = True, tls: tuple[Path, Path, Path] | None = None
) -> Iterator[RedisServer]:
    """A private server (started unless ``start`` is false), stopped at the end."""
    server = RedisServer(workdir=workdir, args=args, tls=tls)
    try:
        if start:
            server.start()
        yield server
    finally:
        server.stop()


@contextmanager
def redis_cluster(workdir: Path, masters: int = 3, timeout_s: float = 30.0) -> Iterator[list[str]]:
    """A cluster of ``masters`` primaries (no replicas) on free loopback ports; yields their
    ``host:port`` addresses once every node reports ``cluster_state:ok``."""
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not on PATH")
    nodes = []
    for i in range(masters):
        port = cluster_port()
        nodes.append(
            RedisServer(
                workdir=workdir / f"node-{i}",
                port=port,
                args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(workdir / f"node-{i}" / "nodes.conf"),
                    "--cluster-node-timeout",
                    "2000",
                ),
            )
        )
    try:
        for node in nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=timeout_s,
        )
        deadline = time.monotonic() + timeout_s
        for node in nodes:
            while True:
                info = subprocess.run(
                    [cli, "-p", str(node.port), "cluster", "info"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                ).stdout
                if "cluster_state:ok" in info:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the cluster did not become ready: {info}")
                time.sleep(0.1)
        yield addresses
    finally:
        for node in nodes:
            node.stop()
