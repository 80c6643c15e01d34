"""A real Redis for the tests: the server given by REDIS_URL, or a `redis-server` of our own.

Without REDIS_URL the tests start their own `redis-server` on a free port in a temporary
directory, configured as production should be (AOF on, `appendfsync always`), and stop it
afterwards; nothing on the machine's own Redis (127.0.0.1:6379) is touched. With REDIS_URL
every test works under a key prefix of its own and deletes only the keys under that
prefix: never FLUSHALL/FLUSHDB, since the server may be shared.

`SentinelGroup` is a master, a replica and three sentinels of the tests' own (fixture
`redis_sentinel`), for failover tests.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

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


# --- Sentinel -------------------------------------------------------------------------------

SENTINEL_MASTER = "lgtest"


@dataclass
class SentinelGroup:
    """A master, one replica and three `redis-sentinel`s (quorum 2) on free ports under
    `directory`, tuned to fail over in seconds: the master is down after
    `down_after_ms` without an answer, a failover that stalls is retried after
    `failover_timeout_ms`. Always servers of our own (REDIS_URL does not apply: the tests
    kill the master). Reusable: `kill_master()` then `wait_for_promotion()`, as often as
    there is a replica left to promote.
    """

    directory: Path
    down_after_ms: int = 1000
    failover_timeout_ms: int = 2000
    master: RedisServer | None = None
    replica: RedisServer | None = None
    sentinel_ports: list[int] = field(default_factory=list)
    sentinels: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return SENTINEL_MASTER

    @property
    def addresses(self) -> list[str]:
        """For `[store] sentinels`."""
        return [f"127.0.0.1:{port}" for port in self.sentinel_ports]

    @property
    def servers(self) -> list[RedisServer]:
        return [s for s in (self.master, self.replica) if s is not None]

    def start(self, timeout: float = 30) -> SentinelGroup:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.master = RedisServer(free_port(), self.directory / "master").start()
        self.replica = RedisServer(
            free_port(),
            self.directory / "replica",
            extra=["--replicaof", "127.0.0.1", str(self.master.port)],
        ).start()
        _wait(
            lambda: _info(self.replica, "replication").get("master_link_status") == "up",
            timeout,
            "the replica never synced with the master",
            self.replica,
        )
        binary = redis_binary("redis-sentinel")
        for _ in range(3):
            port = free_port()
            home = self.directory / f"sentinel-{port}"
            home.mkdir()
            conf = home / "sentinel.conf"  # sentinel rewrites its file: one each, writable
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {home}\n"
                f"logfile {home / 'sentinel.log'}\n"
                f"sentinel monitor {self.name} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.name} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {self.name} 1\n",
                encoding="utf-8",
            )
            self.sentinel_ports.append(port)
            self.sentinels.append(
                subprocess.Popen(
                    [binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        # Ready when every sentinel knows the replica and the two other sentinels: only then
        # can a majority agree the master is down and promote the replica.
        _wait(self._quorum_ready, timeout, "the sentinels never found each other and the replica")
        return self

    def _quorum_ready(self) -> bool:
        for port in self.sentinel_ports:
            client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
            try:
                replicas = client.execute_command("SENTINEL", "REPLICAS", self.name)
                peers = client.execute_command("SENTINEL", "SENTINELS", self.name)
            except redis.RedisError:
                return False
            finally:
                client.close()
            if len(replicas) < 1 or len(peers) < 2:
                return False
        return True

    def wait_replicated(self, timeout: float = 10) -> None:
        """Until every replica has every write the master took so far (replication is
        asynchronous: what the master acknowledged and did not pass on dies with it)."""

        def caught_up() -> bool:
            master = self.server_at(self.master_address())
            offset = int(_info(master, "replication").get("master_repl_offset", -1))
            others = [s for s in self.servers if s is not master and s.running]
            return offset >= 0 and all(
                int(_info(s, "replication").get("slave_repl_offset", -1)) >= offset for s in others
            )

        _wait(caught_up, timeout, "the replicas did not catch up with the master")

    def master_address(self) -> tuple[str, int]:
        """The master as the sentinels' majority names it now."""
        seen: dict[tuple[str, int], int] = {}
        for port in self.sentinel_ports:
            client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
            try:
                host, at = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
                seen[(host, int(at))] = seen.get((host, int(at)), 0) + 1
            except redis.RedisError:
                continue
            finally:
                client.close()
        return max(seen, key=lambda a: seen[a])

    def server_at(self, address: tuple[str, int]) -> RedisServer:
        return next(s for s in self.servers if s.port == address[1])

    def kill_master(self) -> tuple[str, int]:
        """SIGKILL the current master (a crash: no goodbye to anyone); its address."""
        address = self.master_address()
        self.server_at(address).kill()
        return address

    def wait_for_promotion(self, old: tuple[str, int], timeout: float = 30) -> tuple[str, int]:
        """Until the sentinels name another master and it answers as one; its address."""
        found: list[tuple[str, int]] = []

        def promoted() -> bool:
            address = self.master_address()
            if address == old:
                return False
            server = self.server_at(address)
            if _info(server, "replication").get("role") != "master":
                return False
            found.append(address)
            return True

        _wait(promoted, timeout, f"no replica was promoted within {timeout}s")
        return found[-1]

    def stop(self) -> None:
        for process in self.sentinels:
            if process.poll() is None:
                process.terminate()
        for process in self.sentinels:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        for server in self.servers:
            server.stop()

    def logs(self) -> str:
        """The sentinels' and servers' logs (for a failure message)."""
        parts = []
        for path in sorted(self.directory.glob("*/*.log")):
            parts.append(f"--- {path.relative_to(self.directory)}\n")
            parts.append(path.read_text(errors="replace")[-3000:])
        return "".join(parts)


def _info(server: RedisServer | None, section: str) -> dict[str, Any]:
    assert server is not None
    client = redis.Redis(port=server.port, socket_timeout=1)
    try:
        info: dict[str, Any] = client.info(section)
        return info
    except redis.RedisError:
        return {}
    finally:
        client.close()


def _wait(
    done: Callable[[], bool], timeout: float, failure: str, server: RedisServer | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            detail = ""
            if server is not None:
                detail = (server.directory / "redis.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{failure}\n{detail}")
        time.sleep(0.1)
