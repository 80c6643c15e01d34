"""A real Redis for the tests: the server given by REDIS_URL, or a `redis-server` of our own.

Without REDIS_URL the tests start their own `redis-server` on a free port in a temporary
directory, configured as production should be (AOF on, `appendfsync always`), and stop it
afterwards; nothing on the machine's own Redis (127.0.0.1:6379) is touched. With REDIS_URL
every test works under a key prefix of its own and deletes only the keys under that
prefix: never FLUSHALL/FLUSHDB, since the server may be shared.

`redis-server` missing is a failure, not a skip: `.ci/run` installs it (Debian's
redis-server), and a test that needs a real component must not pass without one.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary(name: str = "redis-server") -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        raise RuntimeError(
            f"{name} is not installed: run .ci/run, or `apt-get install redis-server "
            "redis-sentinel`, or set REDIS_URL to a server the tests may use"
        )
    return path


@dataclass
class RedisServer:
    """One redis-server process of our own (or none, when REDIS_URL points elsewhere)."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            redis_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
            *self.extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            while True:
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: the server dies as in a crash (the AOF keeps what it acknowledged)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass
class RedisTarget:
    """Where a test's data lives: a URL and a key prefix no other test uses."""

    url: str
    prefix: str
    server: RedisServer | None  # None when REDIS_URL was given

    def cleanup(self) -> None:
        """Delete this test's keys only (SCAN by prefix; never FLUSHDB)."""
        client = redis.Redis.from_url(self.url)
        try:
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{self.prefix}*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    client.delete(*batch)
                    batch.clear()
            if batch:
                client.delete(*batch)
        finally:
            client.close()


def unique_prefix() -> str:
    return f"lgtest:{uuid.uuid4().hex[:12]}:"


@dataclass
class SessionRedis:
    """The session's Redis: REDIS_URL, or one redis-server started for the whole run."""

    url: str
    server: RedisServer | None

    def target(self) -> RedisTarget:
        return RedisTarget(self.url, unique_prefix(), self.server)


def session_redis() -> Iterator[SessionRedis]:
    given = os.environ.get("REDIS_URL")
    if given:
        yield SessionRedis(given, None)
        return
    with tempfile.TemporaryDirectory(prefix="leadgate-redis-") as tmp:
        server = RedisServer(free_port(), Path(tmp)).start()
        try:
            yield SessionRedis(server.url, server)
        finally:
            server.stop()


_SHARED: list[SessionRedis] = []


def shared_session() -> SessionRedis:
    """The Redis of this test process for code that cannot take a fixture (a hypothesis test
    opening a store per example, the store contract's factories): REDIS_URL, or one
    redis-server started on first use and stopped when the process exits."""
    if not _SHARED:
        given = os.environ.get("REDIS_URL")
        if given:
            _SHARED.append(SessionRedis(given, None))
        else:
            directory = Path(tempfile.mkdtemp(prefix="leadgate-redis-"))
            server = RedisServer(free_port(), directory).start()

            def stop() -> None:
                server.stop()
                shutil.rmtree(directory, ignore_errors=True)

            atexit.register(stop)
            _SHARED.append(SessionRedis(server.url, server))
    return _SHARED[0]
