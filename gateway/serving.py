"""`leadgate serve`: aiohttp's server with the limits a public endpoint needs.

aiohttp reads a request's head and body for as long as the client cares to drip them
(its keep-alive timer only runs between requests, and for an hour by default), so a few
thousand connections that send one byte every few seconds hold a few thousand file
descriptors indefinitely. Here every connection has
- a header deadline: the request line and headers must be complete within
  `server.header_timeout_seconds` of the first byte (or of the connection, for a client
  that sends nothing);
- a body deadline: the whole body within `server.body_timeout_seconds` of the head;
- an idle keep-alive of `server.keepalive_seconds` between requests;
- a cap of `server.max_connections` open connections: the next one gets a 503 and is
  closed at once, before any of its bytes is parsed.
A connection over a deadline is closed; the handler reading its body sees the client
gone (gateway.web answers that without a traceback), and nothing of it is stored.

Client mistakes aiohttp itself refuses (a bad request line, a header that does not parse)
are logged as one debug line, not as an error with a traceback: anyone can send them.

The serving process also tunes the garbage collector (tune_collector): see there why.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_runner import GracefulExit
from aiohttp.web_server import Server

from gateway.config import ServerSettings

log = logging.getLogger(__name__)

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 68\r\n\r\n"
    b'{"error":"busy","detail":"too many open connections; retry shortly"}'
)


# The collector runs its young generation when this many more containers (dicts, lists,
# models, futures) were made than freed since its last run. CPython's default is 700: with
# 32 requests in flight, each holding a few dozen objects until it is answered, the count
# crosses 700 all the time. Measured under the form benchmark (scripts/bench.py, 8 s): ~1,000
# young and ~8 full collections, ~30 us of CPU a request in all; at 10,000, ~220 young and
# ~2 full ones, ~8 us a request. A form post leaves no reference cycles behind (its objects
# go with their reference counts), so the collector has little to find either way, and
# cycles something does make are still collected within 10,000 allocations.
YOUNG_GENERATION = 10_000


def tune_collector() -> None:
    """The serving process's collector thresholds: a larger young generation, the older two
    as CPython has them."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION, middle, old)


@dataclass(frozen=True, slots=True)
class Limits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive: float = 75.0
    max_connections: int = 1000


def limits(server: ServerSettings) -> Limits:
    return Limits(
        header_timeout=server.header_timeout_seconds,
        body_timeout=server.body_timeout_seconds,
        keepalive=server.keepalive_seconds,
        max_connections=server.max_connections,
    )


class GuardedRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol with deadlines on the head and the body."""

    def __init__(self, manager: Server, *, limits: Limits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        manager = self._manager
        if manager is not None and len(manager.connections) > self._limits.max_connections:
            log.debug("connection refused: %d open", len(manager.connections))
            if self.transport is not None:
                self.transport.write(_BUSY)
            self.force_close()
            return
        # A client that connects and sends nothing is a head that never completes.
        self._arm_head()

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self.transport is None or self._upgraded:
            return  # closed, or a WebSocket now: its frames are not a request head
        if self._request_count != before:
            # A head is complete (several, if pipelined): its body is what comes next.
            self._disarm_head()
            payload = self._messages[-1][1] if self._messages else None
            if isinstance(payload, StreamReader) and not payload.is_eof():
                self._arm_body(payload)
        elif data and self._head_timer is None and self._body_timer is None:
            self._arm_head()  # the first bytes of the next request on a kept-alive connection

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head()
        self._disarm_body()
        super().connection_lost(exc)

    # --- deadlines -------------------------------------------------------------------------

    def _arm_head(self) -> None:
        self._disarm_head()
        self._head_timer = self._loop.call_later(self._limits.header_timeout, self._head_late)

    def _disarm_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self._messages or self._request_in_progress:
            return  # a head did arrive; the request is being handled
        log.debug("closing a connection whose head took over %gs", self._limits.header_timeout)
        self.force_close()

    def _arm_body(self, payload: StreamReader) -> None:
        self._disarm_body()
        self._body_timer = self._loop.call_later(
            self._limits.body_timeout, self._body_late, payload
        )
        payload.on_eof(self._disarm_body)

    def _disarm_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_late(self, payload: StreamReader) -> None:
        self._body_timer = None
        if payload.is_eof():
            return
        log.debug("closing a connection whose body took over %gs", self._limits.body_timeout)
        self.force_close()

    # --- logging -----------------------------------------------------------------------------

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError | ConnectionResetError):
            # The client's doing (garbage, a dropped upload): one line, for whoever debugs.
            self.logger.debug("client error from %s: %s", _peer(self), _one_line(exc))
            return
        super().log_exception(*args, **kw)


def _peer(handler: RequestHandler) -> str:
    peer = handler.peername
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


def _one_line(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    return " ".join(str(text).split())[:300]


class GuardedServer(Server):
    limits: Limits

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, limits=self.limits, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose connections are GuardedRequestHandlers."""

    def __init__(self, app: web.Application, *, limits: Limits, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=limits.keepalive, **kwargs)
        self.limits = limits

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        # aiohttp builds the Server itself; only its protocol factory changes.
        server.__class__ = GuardedServer
        assert isinstance(server, GuardedServer)
        server.limits = self.limits
        return server


async def serve(
    app: web.Application, host: str, port: int, limits: Limits, *, shutdown_timeout: float
) -> None:
    """Run until SIGINT/SIGTERM, then shut down gracefully (what web.run_app does)."""
    runner = GuardedRunner(
        app, limits=limits, access_log=None, handle_signals=True, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        await asyncio.Event().wait()  # until a signal cancels this task
    finally:
        await runner.cleanup()


def run(
    app: web.Application, host: str, port: int, limits: Limits, *, shutdown_timeout: float
) -> None:
    """serve() on a fresh loop, shut down the way web.run_app does: the server first (it
    runs the app's cleanup in order), then whatever tasks are left."""
    tune_collector()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(serve(app, host, port, limits, shutdown_timeout=shutdown_timeout))
    try:
        loop.run_until_complete(main)
    except (GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            rest = asyncio.all_tasks(loop)
            for task in rest:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
