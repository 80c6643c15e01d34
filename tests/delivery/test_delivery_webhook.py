"""The webhook sink against a local receiver: signature, delivery id, retries, refusals."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import make_settings
from helpers import ORDER_AUTH, fast_delivery, order, states, until, until_outbox
from store_view import outbox_of

from gateway.delivery.service import WORKER
from gateway.web import create_app

SECRET = "hook-secret-5b7e"


class Receiver:
    def __init__(self) -> None:
        self.statuses: list[int] = []  # answers to give, in order; then 200
        self.got: list[tuple[dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.got.append((dict(request.headers), body))
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            return web.json_response({"id": f"crm-{len(self.got)}"})
        return web.Response(status=status, text="nope")


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    server = TestServer(app)
    await server.start_server()
    yield rec, str(server.make_url("/hook"))
    await server.close()


async def gateway(
    aiohttp_client: Callable[..., Any], tmp_path: Path, url: str
) -> TestClient[Any, Any]:
    delivery = fast_delivery()
    delivery.update(sink="webhook", webhook={"url": url, "secret": SECRET})
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(make_settings(tmp_path, delivery=delivery))
    )
    return client


def verify(headers: dict[str, str], body: bytes) -> bool:
    stamp = headers["X-Leadgate-Timestamp"]
    mac = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["X-Leadgate-Signature"], f"sha256={mac}")


async def test_signed_lead_json_with_a_stable_delivery_id(
    aiohttp_client: Callable[..., Any], tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    rec.statuses = [500, 503]
    client = await gateway(aiohttp_client, tmp_path, url)
    resp = await client.post("/v1/orders", json=order(1, "+7 916 123-45-67"), headers=ORDER_AUTH)
    receipt = await resp.json()
    await until(lambda: len(rec.got) == 3)
    await until_outbox(tmp_path / "leadgate.db", lambda rows: states(rows)[:1] == ["delivered"])
    ids = {h["X-Leadgate-Delivery"] for h, _ in rec.got}
    assert ids == {receipt["event_id"]}  # the same id on every retry: dedupe on it
    assert [h["X-Leadgate-Attempt"] for h, _ in rec.got] == ["1", "2", "3"]
    for headers, body in rec.got:
        assert verify(headers, body)
        assert headers["X-Leadgate-Event"] == "lead.created"
    payload = orjson.loads(rec.got[-1][1])
    assert payload["lead"]["id"] == receipt["lead_id"]
    assert payload["lead"]["contact"]["phones"] == ["+79161234567"]
    assert payload["event"]["id"] == receipt["event_id"]
    assert (await outbox_of(tmp_path / "leadgate.db"))[0].remote_id == "crm-3"


async def test_a_tampered_body_fails_verification(
    aiohttp_client: Callable[..., Any], tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    client = await gateway(aiohttp_client, tmp_path, url)
    await client.post("/v1/orders", json=order(1, "+7 916 123-45-67"), headers=ORDER_AUTH)
    await until(lambda: len(rec.got) == 1)
    headers, body = rec.got[0]
    assert verify(headers, body)
    assert not verify(headers, body.replace(b"A-1", b"A-2"))


async def test_refusals_halt_and_bad_requests_go_dead(
    aiohttp_client: Callable[..., Any], tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    rec, url = receiver
    rec.statuses = [401]
    client = await gateway(aiohttp_client, tmp_path, url)
    await client.post("/v1/orders", json=order(1, "+7 916 123-45-67"), headers=ORDER_AUTH)
    worker = client.app[WORKER]
    await until(lambda: worker.halted_since is not None)
    assert (await outbox_of(tmp_path / "leadgate.db"))[0].attempts == 0
    await until_outbox(tmp_path / "leadgate.db", lambda rows: states(rows)[:1] == ["delivered"])
    rec.statuses = [422]
    await client.post("/v1/orders", json=order(2, "+7 916 765-43-21"), headers=ORDER_AUTH)
    rows = await until_outbox(tmp_path / "leadgate.db", lambda rows: states(rows)[-1:] == ["dead"])
    assert rows[-1].last_error == "webhook: HTTP 422: nope"
