"""Slow clients against the real server (gateway.serving), over real TCP sockets.

Each test plays the attack: a client that drips its request head or body a byte at a
time, connects and says nothing, idles on a kept-alive connection, or opens more
connections than allowed. The server must close it on its deadline while an honest
client, even a slowish one within the limits, is served normally. The last test does it
against `leadgate serve` as a real process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession, web
from conftest import make_settings
from served import Served

from gateway.keys import STORE
from gateway.serving import GuardedRunner, Limits, tune_collector
from gateway.store.base import LeadQuery
from gateway.web import create_app

LIMITS = Limits(header_timeout=0.6, body_timeout=0.8, keepalive=0.8, max_connections=4)
FORM = b'{"name": "Slow", "phone": "+7 916 123-45-67"}'
HEAD = (
    b"POST /v1/forms/site HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n" % len(FORM)
)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[int, web.Application]]:
    app = create_app(make_settings(tmp_path))
    runner = GuardedRunner(app, limits=LIMITS, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield port, app
    finally:
        await runner.cleanup()


async def _drip(
    port: int, data: bytes, *, every: float, within: float, at_once: bytes = b""
) -> tuple[float, bytes]:
    """Send `at_once`, then `data` one byte per `every` seconds; (seconds until the server
    closed, what it answered). Fails if the server still listens after `within` seconds."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(at_once)
    await writer.drain()
    started = time.monotonic()
    got = b""
    try:
        for i in range(10_000):
            if i < len(data):
                try:
                    writer.write(data[i : i + 1])
                    await writer.drain()
                except (ConnectionResetError, BrokenPipeError):
                    return time.monotonic() - started, got
            try:
                chunk = await asyncio.wait_for(reader.read(65536), every)
            except TimeoutError:
                chunk = None
            except ConnectionResetError:
                return time.monotonic() - started, got
            if chunk == b"":
                return time.monotonic() - started, got
            if chunk:
                got += chunk
            if time.monotonic() - started > within:
                raise AssertionError(f"still open after {within}s; answered {got[:200]!r}")
        raise AssertionError("drip ran out")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            await writer.wait_closed()


async def _leads(app: web.Application) -> int:
    return len(await app[STORE].list_leads(LeadQuery(limit=500)))


async def test_dripping_the_head_is_cut_off(served: tuple[int, web.Application]) -> None:
    port, app = served
    closed, answer = await _drip(port, HEAD + FORM, every=0.2, within=5)
    # 0.6 s deadline: cut off long before the ~30 bytes of head were through.
    assert closed < 2.0
    assert answer == b""
    assert await _leads(app) == 0


async def test_a_silent_connection_is_closed(served: tuple[int, web.Application]) -> None:
    port, _ = served
    closed, answer = await _drip(port, b"", every=0.1, within=5)
    assert closed < 2.0
    assert answer == b""


async def test_dripping_the_body_is_cut_off(
    served: tuple[int, web.Application], caplog: pytest.LogCaptureFixture
) -> None:
    port, app = served
    caplog.set_level(logging.DEBUG)
    # The head at once, then the body a byte at a time: 0.8 s deadline for ~45 bytes.
    closed, _ = await _drip(port, FORM, every=0.15, within=6, at_once=HEAD)
    assert closed < 2.0
    await asyncio.sleep(0.2)
    assert await _leads(app) == 0
    # A dropped upload is one quiet line, never a traceback at ERROR.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "Traceback" not in caplog.text


async def test_an_idle_kept_alive_connection_is_closed(
    served: tuple[int, web.Application],
) -> None:
    port, app = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(HEAD + FORM)
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert answer.startswith(b"HTTP/1.1 201")
        started = time.monotonic()
        rest = await asyncio.wait_for(reader.read(), 5)  # the body, then EOF when closed
        assert b"receipt" not in rest
        assert time.monotonic() - started < 3.0
    finally:
        writer.close()
    assert await _leads(app) == 1


async def test_honest_slowish_clients_and_keep_alive_are_served(
    served: tuple[int, web.Application],
) -> None:
    port, app = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        # A body in three pieces, each well within the body deadline.
        writer.write(HEAD + FORM[:10])
        await writer.drain()
        for piece in (FORM[10:20], FORM[20:]):
            await asyncio.sleep(0.2)
            writer.write(piece)
            await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"}"), 5)
        assert first.startswith(b"HTTP/1.1 201"), first
        # The same connection again, two requests pipelined.
        writer.write(HEAD + FORM + HEAD + FORM)
        await writer.drain()
        second = await asyncio.wait_for(reader.readuntil(b"}"), 5)
        third = await asyncio.wait_for(reader.readuntil(b"}"), 5)
        assert second.startswith(b"HTTP/1.1 201") and third.startswith(b"HTTP/1.1 201")
    finally:
        writer.close()
    assert await _leads(app) == 1  # the same person three times: one lead


async def test_connections_over_the_cap_get_503(served: tuple[int, web.Application]) -> None:
    port, _ = served
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(LIMITS.max_connections)]
    try:
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b'"error":"busy"' in answer
    finally:
        for _, w in held:
            w.close()
    # Once they are gone, new clients are served again.
    await asyncio.sleep(0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_leadgate_serve_process_cuts_off_slow_clients(tmp_path: Path) -> None:
    config = f"""
[store]
path = "{tmp_path / 'leadgate.db'}"
[server]
header_timeout_seconds = 0.5
body_timeout_seconds = 0.7
"""
    with Served(tmp_path, config) as app:
        closed, answer = await _drip(app.port, HEAD + FORM, every=0.2, within=6)
        assert closed < 2.0 and answer == b""
        closed, answer = await _drip(app.port, FORM, every=0.15, within=8, at_once=HEAD)
        assert answer == b"" and closed < 2.0
        log = app.stderr()
    assert "Traceback" not in log, log


async def test_a_websocket_outlives_the_request_deadlines() -> None:
    """The widget's WebSocket (and any other) is a long conversation, not a slow request."""

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", echo)
    runner = GuardedRunner(app, limits=LIMITS, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        url = f"http://127.0.0.1:{port}/ws"
        async with ClientSession() as session, session.ws_connect(url) as ws:
            for word in ("один", "два", "три"):
                await asyncio.sleep(LIMITS.body_timeout)  # past every deadline, in total
                await ws.send_str(word)
                assert (await ws.receive(timeout=5)).data == word
    finally:
        await runner.cleanup()


# --- the collector ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _busy_server(tmp_path: Path) -> AsyncIterator[int]:
    settings = make_settings(tmp_path, ratelimit={"exempt": ["127.0.0.0/8"]})
    runner = GuardedRunner(create_app(settings), limits=Limits(max_connections=100))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def _post_people(port: int, connections: int, each: int, first: int) -> None:
    """`connections` kept-alive clients posting `each` new people one after another: plain
    sockets, so that what the collector sees is the server's."""

    async def one(start: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for n in range(start, start + each):
                body = b'{"name": "P", "phone": "+7916%07d"}' % n
                writer.write(
                    b"POST /v1/forms/site HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body)
                )
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 201"), head
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
        finally:
            writer.close()

    await asyncio.gather(*(one(first + k * each) for k in range(connections)))


async def test_form_posts_leave_no_reference_cycles(tmp_path: Path) -> None:
    """What makes a larger young generation safe (gateway.serving.tune_collector): a post's
    objects go with their reference counts, none is left for the collector to find."""
    async with _busy_server(tmp_path) as port:
        await _post_people(port, 4, 5, first=0)  # caches and connections warm
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            await _post_people(port, 4, 100, first=1000)
            gc.collect()
            left = len(gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    # The four client connections closing leave a few objects each; 400 posts, none.
    assert left < 100, left


async def test_the_tuned_collector_hardly_runs_under_load(tmp_path: Path) -> None:
    young: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 0:
            young.append(1)

    before = gc.get_threshold()
    async with _busy_server(tmp_path) as port:
        await _post_people(port, 32, 2, first=0)
        gc.callbacks.append(count)
        try:
            gc.set_threshold(700, *before[1:])  # CPython's default
            await _post_people(port, 32, 10, first=1000)
            default_runs = len(young)
            young.clear()
            tune_collector()
            await _post_people(port, 32, 10, first=2000)
            tuned_runs = len(young)
        finally:
            gc.callbacks.remove(count)
            gc.set_threshold(*before)
    assert default_runs >= 10, default_runs  # 32 posts in flight cross 700 all the time
    assert tuned_runs <= default_runs / 5, (tuned_runs, default_runs)
