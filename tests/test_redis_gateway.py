"""The gateway on the Redis store ([store] kind = "redis"), end to end over HTTP: a form, an
order (and the shop's retry), a recorded telephony call, a Telegram chat with a seller's
answer through the Bot API stand-in, and delivery of every lead to the Bitrix24 stand-in.
Then the truth is checked where it lives: a second replica's store on the same Redis sees
all of it, and no SQLite file was made. Last, `leadgate serve` as a real process on Redis
with `leadgate leads list` reading what it stored."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from conftest import ADMIN_AUTH, ADMIN_TOKEN, ORDER_AUTH, make_settings
from served import LEADGATE as LEADGATE_BIN
from served import Served
from telegram_standin import BotApiStandin, fixture, running
from test_conversations import eventually, open_now_calendar

from connectors.telephony.connector import TelephonyConnector
from gateway.keys import CONNECTORS
from gateway.models import Channel, Outcome
from gateway.store.base import EventQuery, LeadQuery, OutboxState
from gateway.store.redis import RedisStore
from gateway.web import create_app
from tests.delivery.b24_standin import Bitrix24StandIn
from tests.redis_server import RedisTarget

Client = TestClient[Any, Any]
BOT_TOKEN = "8162115592:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0"  # the id of the recorded getMe
SECRET = "test-webhook-secret_0123456789"
CHAT = 218485655
CTI_TOKEN = "fixture-cti-token-5d2a9e71b04c"
LEADGATE = [str(LEADGATE_BIN)] if LEADGATE_BIN.exists() else [sys.executable, "-m", "gateway.cli"]
CALLS = Path(__file__).parent / "connectors" / "fixtures" / "telephony"


@pytest.fixture
async def crm() -> AsyncIterator[Bitrix24StandIn]:
    server = Bitrix24StandIn()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def bot_api() -> AsyncIterator[BotApiStandin]:
    async with running(retry_delay=0.05) as server:
        server.add_bot(BOT_TOKEN)
        yield server


def redis_store(target: RedisTarget) -> dict[str, Any]:
    return {"kind": "redis", "url": target.url, "prefix": target.prefix}


def telegram_update(text: str, update_id: int) -> dict[str, Any]:
    """The recorded private text message, re-dated to now."""
    data = fixture("updates/private_text_message.teloxide.json")
    message = data["message"]
    message.update(message_id=update_id, text=text, date=int(time.time()))
    message["from"].update(id=CHAT, language_code="ru")
    message["chat"]["id"] = CHAT
    data["update_id"] = update_id
    return data


def order_body(order_id: str, phone: str) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer": {"name": "Пётр Смирнов", "phone": phone, "email": None, "company": None},
        "items": [
            {"name": "Токарный станок", "quantity": 1, "price": 250000, "category": "Крупное"}
        ],
    }


async def play_call(client: Client, name: str) -> list[int]:
    """A recorded CTI call (form posts), at the moment it was recorded."""
    recorded = json.loads((CALLS / f"{name}.json").read_text(encoding="utf-8"))
    at = datetime.fromisoformat(recorded["received_at"])
    for connector in client.app[CONNECTORS]:
        if isinstance(connector, TelephonyConnector):
            connector.clock = lambda: at
    statuses = []
    for request in recorded["requests"]:
        form = FormData()
        for key, value in request["form"]:
            form.add_field(key, value)
        resp = await client.post(f"/v1/telephony/cti/{CTI_TOKEN}", data=form)
        statuses.append(resp.status)
    return statuses


async def test_the_main_flows_on_redis(
    aiohttp_client: Callable[..., Awaitable[Client]],
    tmp_path: Path,
    redis_target: RedisTarget,
    crm: Bitrix24StandIn,
    bot_api: BotApiStandin,
) -> None:
    always = {day: ["00:00-24:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    settings = make_settings(
        tmp_path,
        store=redis_store(redis_target),
        delivery={
            "sink": "bitrix24",
            "poll_seconds": 0.02,
            "backoff_initial_seconds": 0.02,
            "backoff_max_seconds": 0.1,
            "wait_seconds": 0.05,
            "bitrix24": {"webhook_url": crm.webhook_url, "assume_busy_on_start": False},
        },
        telephony={"cti": {"token": CTI_TOKEN}},
        telegram={
            "bots": {"shop": {"token": BOT_TOKEN, "secret_token": SECRET, "api_base": bot_api.url}}
        },
        calendar=open_now_calendar() | {"channels": {"telegram": always}},
        conversations={"backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.2},
    )
    client = await aiohttp_client(create_app(settings))

    # A form, and the same person again: one lead.
    resp = await client.post("/v1/forms/site", json={"name": "Иван", "phone": "+7 916 555-01-01"})
    assert resp.status == 201, await resp.text()
    form = await resp.json()
    assert form["outcome"] == "created"
    resp = await client.post("/v1/forms/site", json={"name": "Иван", "phone": "89165550101"})
    assert (await resp.json())["lead_id"] == form["lead_id"]

    # An order by the same person joins that lead; the shop's retry is a replay of it.
    resp = await client.post(
        "/v1/orders", json=order_body("A-1", "+79165550101"), headers=ORDER_AUTH
    )
    assert resp.status in (200, 201), await resp.text()
    order = await resp.json()
    assert (order["outcome"], order["lead_id"]) == ("merged", form["lead_id"])
    retry = await client.post(
        "/v1/orders", json=order_body("A-1", "+79165550101"), headers=ORDER_AUTH
    )
    assert (await retry.json())["outcome"] == "replayed"
    assert (await retry.json())["event_id"] == order["event_id"]

    # A recorded call: a lead of its own (another person), its events on it.
    assert await play_call(client, "cti_answered") == [200, 200, 200]

    # A Telegram chat: the webhook keeps the update, the inbox worker makes the lead, a
    # seller answers through the API and the Bot API stand-in receives it.
    bot_api.known_chats.add(CHAT)
    resp = await client.post(
        "/v1/telegram/shop",
        json=telegram_update("Здравствуйте, нужен подъёмник", 1),
        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
    )
    assert resp.status == 200

    async def chat_lead() -> dict[str, Any] | None:
        listed = await client.get("/v1/leads?channel=telegram", headers=ADMIN_AUTH)
        leads = (await listed.json())["leads"]
        return leads[0] if leads else None

    chat = await eventually(chat_lead)
    resp = await client.post(
        f"/v1/leads/{chat['id']}/messages", json={"text": "Подъёмник есть"}, headers=ADMIN_AUTH
    )
    assert resp.status == 202, await resp.text()
    answer = await resp.json()

    async def sent() -> dict[str, Any] | None:
        detail = await (await client.get(f"/v1/leads/{chat['id']}", headers=ADMIN_AUTH)).json()
        line = next(m for m in detail["messages"] if m["id"] == answer["message_id"])
        return detail if line["status"] == "sent" else None

    detail = await eventually(sent)
    assert [m["direction"] for m in detail["messages"]] == ["in", "out"]
    assert [s.text for s in bot_api.sent] == ["Подъёмник есть"]

    # Delivery: each lead reached Bitrix24 once (the merges as comments on it).
    store = RedisStore(
        redis.asyncio.Redis.from_url(redis_target.url, decode_responses=True),
        prefix=redis_target.prefix,
    )
    await store.open()
    try:
        leads = await store.list_leads(LeadQuery())
        channels = {lead.channel for lead in leads}
        assert channels == {Channel.WEBFORM, Channel.PHONE, Channel.TELEGRAM}

        async def delivered() -> bool:
            rows = await store.outbox(limit=1000)
            crm_rows = [r for r in rows if r.kind.value.startswith("lead.")]
            return bool(crm_rows) and all(r.state is OutboxState.DELIVERED for r in crm_rows)

        await eventually(delivered)
        assert len(crm.leads) == len(leads) == 3
        links = await store.lead_links("bitrix24", [lead.id for lead in leads])
        assert {link.remote_id for link in links.values()} == {str(i) for i in crm.leads}

        # The truth is in Redis, seen alike by another replica: the events, in order.
        events = await store.list_events(EventQuery(lead_id=form["lead_id"]))
        assert [e.record.outcome for e in events] == [
            Outcome.CREATED,
            Outcome.MERGED,
            Outcome.MERGED,
        ]
        assert (await store.get_event(order["event_id"])) is not None
    finally:
        await store.close()
    assert not (tmp_path / "leadgate.db").exists()


def test_serve_and_the_cli_on_redis(tmp_path: Path, redis_target: RedisTarget) -> None:
    config = f"""
[store]
kind = "redis"
url = "{redis_target.url}"
prefix = "{redis_target.prefix}"

[admin.tokens]
ops = "{ADMIN_TOKEN}"

[[sellers]]
id = "anna"
name = "Анна"
"""
    with Served(tmp_path, config) as app:
        request = urllib.request.Request(
            f"{app.base}/v1/forms/site",
            data=json.dumps({"name": "Ольга", "phone": "+7 903 555-02-02"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 201
            receipt = json.loads(resp.read())
        assert "Traceback" not in app.stderr()
    assert not (tmp_path / "leadgate.db").exists()
    # The CLI reads the same Redis (no gateway running now: the data outlives it).

    def run(*argv: str) -> Any:
        done = subprocess.run(
            [*LEADGATE, *argv, "--json", "-c", str(tmp_path / "leadgate.toml")],
            cwd=tmp_path,
            capture_output=True,
            check=True,
        )
        return json.loads(done.stdout)

    leads = run("leads", "list")
    assert [lead["id"] for lead in leads] == [receipt["lead_id"]]
    assert leads[0]["assigned_to"] == "anna"
    # No remote sink configured: the store is the destination, the row born delivered.
    outbox = run("outbox", "list")
    assert [(i["lead_id"], i["state"]) for i in outbox] == [(receipt["lead_id"], "delivered")]
    assert run("quarantine", "list") == []
