"""Real Redis servers for the fan-out tests: a single node and a three-master cluster.

Each fixture starts its own ``redis-server`` processes on free loopback ports, in a temporary
directory, and stops them afterwards. Without ``redis-server`` on PATH the tests skip locally
with a clear message, but **fail** when ``CI=true`` (CI must never skip them).
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["RedisServer", "redis_cluster", "redis_server", "require_redis"]


def require_redis(env: dict[str, str] | None = None, which: object = shutil.which) -> str:
    """Path of ``redis-server``; skip (locally) or fail (``CI=true``) when it is missing."""
    env = dict(os.environ) if env is None else env
    path = which("redis-server")  # type: ignore[operator]
    if path and which("redis-cli"):  # type: ignore[operator]
        return str(path)
    message = "redis-server/redis-cli not found on PATH (apt-get install redis-server)"
    if env.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI must run the Redis tests", pytrace=False)
    pytest.skip(f"{message}: skipping the Redis fan-out tests locally")
    raise AssertionError("unreachable")  # pragma: no cover


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(cluster: bool = False) -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago.

    With ``cluster=True`` the cluster bus port (``port + 10000``) is free too, so the port is
    taken from 20000-50000.
    """
    if not cluster:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    for _ in range(200):
        port = random.randint(20000, 50000)
        if _is_free(port) and _is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")  # pragma: no cover


def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"redis-server on port {port} did not start")


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 (restartable on the same port)."""

    def __init__(self, binary: str, directory: Path, *extra: str, cluster: bool = False) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port(cluster)
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT``."""
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (or start again) on the same port."""
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.directory / "redis.log"),
            *self.extra,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_ready(self.port, self.proc)

    def kill(self) -> None:
        """``kill -9`` the server (its data is lost: nothing is persisted)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        """Terminate the server and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh single-node Redis on a free loopback port."""
    binary = require_redis()
    server = RedisServer(binary, tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        gc.collect()  # coredis' leftovers of dead connections, while the test's filters apply


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[list[RedisServer]]:
    """A three-master Redis Cluster (no replicas) on free loopback ports."""
    binary = require_redis()
    nodes = [
        RedisServer(
            binary,
            tmp_path / f"node{i}",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(tmp_path / f"node{i}" / "nodes.conf"),
            "--cluster-node-timeout",
            "2000",
            cluster=True,
        )
        for i in range(3)
    ]
    try:
        for node in nodes:
            node.start()
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )
        deadline = time.monotonic() + 15
        while True:
            states = [
                subprocess.run(
                    ["redis-cli", "-p", str(n.port), "cluster", "info"],
                    capture_output=True,
                    timeout=5,
                    check=False,
                ).stdout
                for n in nodes
            ]
            if all(b"cluster_state:ok" in s for s in states):
                break
            if time.monotonic() > deadline:  # pragma: no cover
                raise RuntimeError("the test cluster did not become ready")
            time.sleep(0.05)
        yield nodes
    finally:
        for node in nodes:
            node.stop()
        gc.collect()
