"""Several `leadgate serve` replicas behind a round-robin proxy, for the multi-replica tests.

The proxy is TCP-level, as an L4 load balancer (HAProxy in tcp mode) is: each client
connection goes to the next replica in turn; a replica that refuses the connection is
skipped, so after one dies its peers take all new connections, while connections that were
open to it break mid-request, as they would in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
from pathlib import Path

from tests.redis_server import free_port


class RoundRobinProxy:
    def __init__(self, backends: list[int]) -> None:
        self.backends = backends  # ports on 127.0.0.1
        self._turn = itertools.count()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.connections: dict[int, int] = {}  # backend port -> connections given to it

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        start = next(self._turn)
        for i in range(len(self.backends)):
            port = self.backends[(start + i) % len(self.backends)]
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            self.connections[port] = self.connections.get(port, 0) + 1
            await self._pipe(reader, writer, up_reader, up_writer)
            return
        writer.close()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                # A dead replica's connection ends abruptly for the client too (RST-like):
                # close both sides so the client sees the failure, not a hang.
                with contextlib.suppress(Exception):
                    dst.close()

        tasks = [
            asyncio.create_task(copy(reader, up_writer)),
            asyncio.create_task(copy(up_reader, writer)),
        ]
        for task in tasks:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.gather(*tasks, return_exceptions=True)


class Replica:
    """One `leadgate serve` process on a config shared with its peers."""

    def __init__(self, name: str, config: Path, directory: Path) -> None:
        self.name, self.config, self.directory = name, config, directory
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = directory / f"{name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEADGATE_")}
        log = open(self.log_path, "ab")  # noqa: SIM115, ASYNC230
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; from gateway.cli import main; sys.exit(main())",
            "serve",
            "-c",
            str(self.config),
            "--port",
            str(self.port),
            cwd=self.directory,
            env=env,
            stdout=log,
            stderr=log,
        )
        log.close()

    async def wait_ready(self, within: float = 60.0) -> None:
        import aiohttp

        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        async with aiohttp.ClientSession() as session:
            while loop.time() < deadline:
                assert self.proc is not None
                if self.proc.returncode is not None:
                    raise AssertionError(f"{self.name} exited early:\n{self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    async with session.get(
                        self.url + "/healthz", timeout=aiohttp.ClientTimeout(total=2)
                    ) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.05)  # polling for startup, not timing anything
        raise AssertionError(f"{self.name} did not become healthy:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def terminate(self) -> int | None:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            return await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()
