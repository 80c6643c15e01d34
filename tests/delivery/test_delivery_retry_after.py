"""A CRM's Retry-After cannot break the outbox worker.

"Retry-After: inf" used to overflow the worker's date arithmetic: the cycle failed before
recording anything, so the same items were claimed and sent again every second, forever.
Whatever the CRM says (inf, nan, 1e308, negative, a date in the year 9999, garbage), the
wait is clamped to 0..1 h, recorded, and the worker carries on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import make_settings
from helpers import ORDER_AUTH, fast_delivery, order, until

from gateway.delivery.http_session import MAX_RETRY_AFTER, retry_after_seconds
from gateway.delivery.service import WORKER
from gateway.keys import STORE
from gateway.web import create_app

Client = TestClient[Any, Any]
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("inf", MAX_RETRY_AFTER),
        ("Infinity", MAX_RETRY_AFTER),
        ("1e308", MAX_RETRY_AFTER),
        ("nan", None),
        ("-5", 0.0),
        ("-inf", 0.0),
        ("120", 120.0),
        ("2.5", 2.5),
        ("Fri, 27 Nov 2026 12:00:30 GMT", 30.0),
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
        ("soon", None),
        ("", None),
    ],
)
def test_retry_after_is_read_and_clamped(header: str, seconds: float | None) -> None:
    assert retry_after_seconds(header, NOW) == seconds


class Crm:
    def __init__(self, retry_after: str) -> None:
        self.retry_after = retry_after
        self.calls = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.calls == 1:
            return web.Response(status=503, headers={"Retry-After": self.retry_after})
        return web.json_response({"id": "crm-1"})


@pytest.fixture
async def crm(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Crm, str]]:
    server_crm = Crm(request.param)
    app = web.Application()
    app.router.add_post("/hook", server_crm.handle)
    server = TestServer(app)
    await server.start_server()
    yield server_crm, str(server.make_url("/hook"))
    await server.close()


async def test_unreadable_retry_after_is_an_ordinary_retry(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    server = Crm("nan")
    app = web.Application()
    app.router.add_post("/hook", server.handle)
    test_server = TestServer(app)
    await test_server.start_server()
    try:
        client = await _gateway(aiohttp_client, tmp_path, str(test_server.make_url("/hook")))
        store = client.app[STORE]

        async def delivered() -> bool:
            return (await store.outbox(None, 10))[0].state == "delivered"

        await until(delivered)
        assert server.calls == 2
    finally:
        await test_server.close()


async def _gateway(aiohttp_client: Callable[..., Any], tmp_path: Path, url: str) -> Client:
    delivery = fast_delivery()
    delivery.update(sink="webhook", webhook={"url": url, "secret": "retry-after-secret-1"})
    client: Client = await aiohttp_client(create_app(make_settings(tmp_path, delivery=delivery)))
    resp = await client.post("/v1/orders", json=order(1, "+7 916 123-45-67"), headers=ORDER_AUTH)
    assert resp.status == 201
    return client


@pytest.mark.parametrize(
    "crm", ["inf", "1e308", "Infinity", "Fri, 31 Dec 9999 23:59:59 GMT"], indirect=True
)
async def test_worker_survives_any_retry_after(
    aiohttp_client: Callable[..., Any], tmp_path: Path, crm: tuple[Crm, str]
) -> None:
    server, url = crm
    client = await _gateway(aiohttp_client, tmp_path, url)
    store = client.app[STORE]

    async def recorded() -> bool:
        [item] = await store.outbox(None, 10)
        return item.last_error is not None

    await until(recorded)
    await asyncio.sleep(0.3)  # a broken worker would send it again every cycle by now
    assert server.calls == 1
    [item] = await store.outbox(None, 10)
    assert item.state == "pending"
    assert item.next_attempt_at <= datetime.now(UTC) + timedelta(seconds=MAX_RETRY_AFTER + 5)
    worker = client.app[WORKER]
    assert worker.stopped is None
    # Made due again (what `leadgate outbox retry` does), it goes through: the loop lives.
    await store.retry_outbox([item.id], datetime.now(UTC))
    worker.wake()
    await until(lambda: server.calls == 2)

    async def delivered() -> bool:
        return (await store.outbox(None, 10))[0].state == "delivered"

    await until(delivered)
