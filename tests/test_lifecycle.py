"""Connector lifecycle in the app: supervised tasks and /readyz, the shutdown order on a real
SIGTERM, WebSockets kept out of the request latency, the startup log of each connector."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from conftest import make_settings
from test_serve_process import clean_env, free_port, wait_healthy

from connectors import registry
from gateway.channels import ChannelSpec, Connector, ConnectorContext, TaskSpec
from gateway.delivery.service import WORKER
from gateway.keys import METRICS, SUPERVISOR
from gateway.web import create_app

ROOT = Path(__file__).resolve().parents[1]


class TestConnector:
    """A connector made for these tests: routes, tasks and hooks as given."""

    __test__ = False

    def __init__(
        self,
        name: str,
        routes: Sequence[web.AbstractRouteDef] = (),
        tasks: Sequence[TaskSpec] = (),
        problem: str | None = None,
    ) -> None:
        self.name = name
        self._routes = list(routes)
        self._tasks = list(tasks)
        self._problem = problem
        self.shut = False

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        return self._routes

    def tasks(self) -> Sequence[TaskSpec]:
        return self._tasks

    def readiness(self) -> str | None:
        return self._problem

    async def shutdown(self) -> None:
        self.shut = True


def spec_of(connector: TestConnector) -> ChannelSpec:
    def build(ctx: ConnectorContext) -> Connector | None:
        return connector

    return ChannelSpec(name=connector.name, channels={}, build=build)


def sample(app: web.Application, name: str, **labels: str) -> float | None:
    value: float | None = app[METRICS].registry.get_sample_value(name, labels)
    return value


# --- supervised tasks and /readyz ----------------------------------------------------------


async def test_a_dying_task_is_restarted_and_named_in_readyz(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    calls = 0
    healthy = asyncio.Event()

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("mailbox went away")
        healthy.set()
        await asyncio.Event().wait()

    probe = TestConnector("probe", tasks=[TaskSpec("probe:job", flaky, singleton=True)])
    app = create_app(make_settings(tmp_path), specs=[*registry.SPECS, spec_of(probe)])
    backoff_over = asyncio.Event()
    waits: list[float] = []

    async def backoff(seconds: float) -> None:  # the test says when the backoff is over
        waits.append(seconds)
        await backoff_over.wait()

    app[SUPERVISOR]._sleep = backoff
    client = await aiohttp_client(app)
    deadline = time.monotonic() + 3
    while not waits:
        assert time.monotonic() < deadline, "the task did not fail"
        await asyncio.sleep(0.01)
    assert waits == [1.0]

    resp = await client.get("/readyz")
    assert resp.status == 200  # a task down degrades; it does not stop serving
    body = await resp.json()
    assert body["status"] == "degraded"
    assert any(
        p.startswith("tasks: probe:job failed (OSError: mailbox went away), restarted 1 time(s)")
        for p in body["problems"]
    ), body
    assert sample(app, "leadgate_task_restarts_total", task="probe:job") == 1

    backoff_over.set()
    await asyncio.wait_for(healthy.wait(), 3)
    body = await (await client.get("/readyz")).json()
    assert not any(p.startswith("tasks:") for p in body["problems"]), body
    metrics = await (await client.get("/metrics")).text()
    assert 'leadgate_task_restarts_total{task="probe:job"} 1.0' in metrics


async def test_connector_readiness_reaches_readyz(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    probe = TestConnector("probe", problem="the vendor refused our token")
    app = create_app(make_settings(tmp_path), specs=[*registry.SPECS, spec_of(probe)])
    client = await aiohttp_client(app)
    body = await (await client.get("/readyz")).json()
    assert "probe: the vendor refused our token" in body["problems"]


async def test_the_outbox_worker_is_a_supervised_task(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    app = create_app(make_settings(tmp_path))
    worker = app[WORKER]
    spec = app[SUPERVISOR].specs["outbox"]
    assert not spec.singleton  # every replica may run one; the outbox claims keep them apart
    starts = 0
    real_start = worker.sink.start

    async def start_once_failing() -> None:
        nonlocal starts
        starts += 1
        if starts == 1:
            raise ConnectionError("the sink could not start")
        await real_start()

    worker.sink.start = start_once_failing  # type: ignore[method-assign]
    app[SUPERVISOR].backoff_initial = 0.05
    await aiohttp_client(app)
    deadline = time.monotonic() + 3
    while starts < 2:
        assert time.monotonic() < deadline, "the worker was not restarted"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert sample(app, "leadgate_task_restarts_total", task="outbox") == 1
    assert worker.problem() is None  # running again: no stale "worker stopped"


# --- WebSockets are not requests -----------------------------------------------------------


async def test_websocket_sessions_stay_out_of_request_latency(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await ws.send_str(msg.data.upper())
        return ws

    probe = TestConnector("probe", routes=[web.get("/v1/test/ws", echo)])
    app = create_app(make_settings(tmp_path), specs=[*registry.SPECS, spec_of(probe)])
    client = await aiohttp_client(app)
    ws = await client.ws_connect("/v1/test/ws")
    await ws.send_str("привет")
    assert (await ws.receive()).data == "ПРИВЕТ"
    assert sample(app, "leadgate_websockets_open", route="/v1/test/ws") == 1
    await asyncio.sleep(0.2)  # a session of some length: it must not show as a slow request
    await ws.close()
    deadline = time.monotonic() + 3
    while sample(app, "leadgate_websockets_open", route="/v1/test/ws") != 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert sample(app, "leadgate_request_seconds_count", route="/v1/test/ws", method="GET") is None

    # A plain GET on the same route (no Upgrade) is a request like any other.
    resp = await client.get("/v1/test/ws")
    assert resp.status >= 400
    count = sample(app, "leadgate_request_seconds_count", route="/v1/test/ws", method="GET")
    assert count == 1


# --- the startup log -----------------------------------------------------------------------


async def test_startup_logs_each_connector_with_route_patterns_never_secrets(
    aiohttp_client: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = "cti-token-that-must-stay-secret"
    settings = make_settings(tmp_path, telephony={"cti": {"token": token}})
    with caplog.at_level(logging.INFO, logger="gateway.web"):
        await aiohttp_client(create_app(settings))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("connector ")]
    assert lines == [
        "connector webform: routes POST /v1/forms/{form_id}, OPTIONS /v1/forms/{form_id}, "
        "GET /v1/forms/{form_id}/thanks; tasks none",
        "connector orders: routes POST /v1/orders; tasks none",
        "connector telephony: routes POST /v1/telephony/cti, POST /v1/telephony/cti/{token}; "
        "tasks none",
    ]
    assert token not in caplog.text


# --- shutdown order on a real SIGTERM ------------------------------------------------------

SERVER = """
import asyncio, sys
from aiohttp import web
from connectors import registry
from gateway.channels import ChannelSpec, TaskSpec
from gateway.config import load_settings
from gateway.store.sqlite import SQLiteStore
from gateway.web import create_app

port, journal, db = int(sys.argv[1]), sys.argv[2], sys.argv[3]


def note(line):
    with open(journal, "a", encoding="utf-8") as fh:
        fh.write(line + "\\n")


class Recording:
    def __init__(self, name, singleton):
        self.name, self.singleton = name, singleton

    def routes(self):
        return []

    def tasks(self):
        async def run():
            note(f"task {self.name} started")
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                note(f"task {self.name} cancelled")
                raise
        return [TaskSpec(f"{self.name}:job", run, singleton=self.singleton)]

    def readiness(self):
        return None

    async def shutdown(self):
        await asyncio.sleep(0.05)  # a hook that awaits: the next one still waits its turn
        note(f"shutdown {self.name}")


class Store(SQLiteStore):
    async def close(self):
        note("store closing")
        await super().close()


def spec(name, singleton):
    return ChannelSpec(name=name, channels={}, build=lambda ctx: Recording(name, singleton))


settings = load_settings(None, store={"path": db})
store = Store(settings.store.path, max_batch=settings.store.max_batch, outbox_delivered=True)
specs = [*registry.SPECS, spec("first", True), spec("second", False)]
web.run_app(create_app(settings, store=store, specs=specs), host="127.0.0.1", port=port,
            print=None, handle_signals=True)
"""


def test_sigterm_cancels_tasks_then_shuts_connectors_down_in_order_then_closes_the_store(
    tmp_path: Path,
) -> None:
    script = tmp_path / "server.py"
    script.write_text(textwrap.dedent(SERVER), encoding="utf-8")
    journal = tmp_path / "journal.txt"
    port = free_port()
    env = {**clean_env(), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(port), str(journal), str(tmp_path / "l.db")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 10
        while not journal.exists() or journal.read_text(encoding="utf-8").count("started") < 2:
            assert time.monotonic() < deadline, "tasks did not start"
            time.sleep(0.02)  # polling for startup, not timing anything
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")
    lines = journal.read_text(encoding="utf-8").splitlines()
    assert sorted(lines[:2]) == ["task first started", "task second started"]
    assert sorted(lines[2:4]) == ["task first cancelled", "task second cancelled"]
    assert lines[4:] == ["shutdown first", "shutdown second", "store closing"]
