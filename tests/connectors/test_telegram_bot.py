"""A Telegram bot end to end against the local Bot API stand-in (tests/telegram_standin.py):
the webhook (secret, inbox before the 200, duplicates, what is not an update), replies
and every way sendMessage can answer, long polling with offsets and its conflicts, and
the `leadgate telegram` commands."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import ADMIN_AUTH, make_settings
from telegram_standin import BotApiStandin, fixture, running
from test_conversations import closed_now_calendar, eventually, open_now_calendar

from gateway import cli
from gateway.config import ConfigError, load_settings
from gateway.keys import STORE
from gateway.web import create_app

Client = TestClient[Any, Any]
TOKEN = "8162115592:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0"  # the id of the recorded getMe
SECRET = "test-webhook-secret_0123456789"
HEADER = "X-Telegram-Bot-Api-Secret-Token"
CHAT = 218485655


def update(
    text: str = "Здравствуйте, нужен подъёмник",
    *,
    update_id: int = 1,
    message_id: int = 1,
    chat: int = CHAT,
    lang: str = "ru",
    **extra: Any,
) -> dict[str, Any]:
    """The recorded private text message (fixtures), re-dated to now so the calendar
    judges it as it would a live one, with the text and ids a test needs."""
    data = fixture("updates/private_text_message.teloxide.json")
    message = data["message"]
    message.update(message_id=message_id, text=text, date=int(time.time()), **extra)
    message["from"].update(id=chat, language_code=lang)
    message["chat"]["id"] = chat
    data["update_id"] = update_id
    return data


@pytest.fixture
async def standin() -> AsyncIterator[BotApiStandin]:
    async with running(retry_delay=0.05) as server:
        server.add_bot(TOKEN)
        yield server


class Gateway:
    def __init__(self, client: Client, standin: BotApiStandin) -> None:
        self.client = client
        self.standin = standin
        self.store = client.app[STORE]

    async def post(self, body: Any, secret: str | None = SECRET) -> Any:
        """Telegram posts an update (the chat now exists for the Bot API)."""
        for key in ("message", "edited_message"):
            if isinstance(body, dict) and isinstance(body.get(key), dict):
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    self.standin.known_chats.add(int(body[key]["chat"]["id"]))
        headers = {HEADER: secret} if secret is not None else {}
        return await self.client.post("/v1/telegram/shop", json=body, headers=headers)

    async def leads(self) -> list[dict[str, Any]]:
        resp = await self.client.get("/v1/leads", headers=ADMIN_AUTH)
        leads: list[dict[str, Any]] = (await resp.json())["leads"]
        return leads

    async def lead(self, lead_id: str) -> dict[str, Any]:
        resp = await self.client.get(f"/v1/leads/{lead_id}", headers=ADMIN_AUTH)
        body: dict[str, Any] = await resp.json()
        return body

    async def one_lead(self) -> dict[str, Any]:
        async def found() -> dict[str, Any] | None:
            leads = await self.leads()
            return await self.lead(leads[0]["id"]) if leads else None

        return await eventually(found)

    async def settled(self, lead_id: str, lines: int) -> dict[str, Any]:
        async def calm() -> dict[str, Any] | None:
            lead = await self.lead(lead_id)
            busy = [m for m in lead["messages"] if m["status"] in ("queued", "retrying")]
            return lead if len(lead["messages"]) >= lines and not busy else None

        return await eventually(calm)

    async def metrics(self) -> str:
        return await (await self.client.get("/metrics")).text()


@pytest.fixture
def gateway_factory(
    aiohttp_client: Callable[..., Any], tmp_path: Path, standin: BotApiStandin
) -> Callable[..., Awaitable[Gateway]]:
    async def make(bot: dict[str, Any] | None = None, **settings: Any) -> Gateway:
        config = {"token": TOKEN, "secret_token": SECRET, "api_base": standin.url}
        config.update(bot or {})
        settings.setdefault(
            "calendar",
            open_now_calendar() | {"channels": {"telegram": open_now_calendar()["channels"]["vk"]}},
        )
        settings.setdefault(
            "conversations", {"backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.2}
        )
        app = create_app(make_settings(tmp_path, telegram={"bots": {"shop": config}}, **settings))
        return Gateway(await aiohttp_client(app), standin)

    return make


def closed_for_telegram() -> dict[str, Any]:
    return {"channels": {"telegram": closed_now_calendar()["channels"]["vk"]}}


# --- configuration ---------------------------------------------------------------------------


def test_a_webhook_bot_without_a_secret_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        f'[telegram.bots.shop]\ntoken = "{TOKEN}"\n\n'
        f'[telegram.bots.quiet]\ntoken = "8162115593:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"\n'
        'secret_token = "has spaces"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    problems = "\n".join(caught.value.problems)
    assert "telegram.bots.shop: Value error, webhook mode needs secret_token" in problems
    assert "telegram.bots.quiet.secret_token" in problems
    assert TOKEN not in problems
    assert cli.main(["check-config", "-c", str(path)]) == 2
    polling = tmp_path / "polling.toml"
    polling.write_text(
        f'[telegram.bots.shop]\ntoken = "{TOKEN}"\nmode = "polling"\n', encoding="utf-8"
    )
    assert cli.main(["check-config", "-c", str(polling)]) == 0  # polling needs no secret


# --- the webhook ------------------------------------------------------------------------------


async def test_the_webhook_stores_before_it_answers_and_ignores_repeats(
    gateway_factory: Callable[..., Awaitable[Gateway]],
) -> None:
    gw = await gateway_factory()
    body = update()
    resp = await gw.post(body)
    assert resp.status == 200 and await resp.json() == {}
    # Acknowledged means kept: it is in the inbox whether or not it was handled yet.
    assert [i.key for i in await gw.store.list_inbox()] == ["1"]
    again = await gw.post(body)  # Telegram's retry of the same update
    assert again.status == 200
    lead = await gw.one_lead()
    assert len(lead["events"]) == 1
    assert lead["channel"] == "telegram" and lead["source_id"] == "UC_TELEGRAM"
    assert lead["contact"]["handles"] == [f"tg:{CHAT}"]
    assert len(await gw.store.list_inbox()) == 1
    metrics = await gw.metrics()
    assert 'leadgate_telegram_received_total{bot="shop",result="new",way="webhook"} 1.0' in metrics
    assert (
        'leadgate_telegram_received_total{bot="shop",result="duplicate",way="webhook"} 1.0'
        in metrics
    )


async def test_the_webhook_checks_the_secret_first(
    gateway_factory: Callable[..., Awaitable[Gateway]],
) -> None:
    gw = await gateway_factory()
    for secret in (None, "wrong", SECRET + "x", ""):
        resp = await gw.post(update(), secret=secret)
        assert resp.status == 401
        assert (await resp.json())["error"] == "unauthorized"
    resp = await gw.client.post("/v1/telegram/nobody", json=update(), headers={HEADER: SECRET})
    assert resp.status == 404
    assert await gw.store.list_inbox() == []
    metrics = await gw.metrics()
    assert 'leadgate_telegram_webhook_errors_total{bot="shop",reason="secret"} 4.0' in metrics


async def test_authentic_input_that_is_no_update_is_kept_not_dropped(
    gateway_factory: Callable[..., Awaitable[Gateway]],
) -> None:
    gw = await gateway_factory()
    resp = await gw.client.post("/v1/telegram/shop", data=b"{not json", headers={HEADER: SECRET})
    assert resp.status == 200  # Telegram would repeat it for a day: nothing to gain
    deep = b'{"update_id": 9, "message": ' + b'{"a": ' * 40 + b"1" + b"}" * 41
    resp = await gw.client.post("/v1/telegram/shop", data=deep, headers={HEADER: SECRET})
    assert resp.status == 200
    kept, nested = await gw.store.list_quarantine("telegram")
    assert kept.body == b"{not json" and "not a Telegram update" in kept.reason
    assert nested.body == deep
    # An update_id with a body aiogram cannot read: stored, then dead with the reason.
    resp = await gw.post({"update_id": 5, "message": {"text": "no chat, no date"}})
    assert resp.status == 200

    async def dead() -> Any:
        items = await gw.store.list_inbox()
        return items if items and items[0].state.value == "dead" else None

    (item,) = await eventually(dead)
    assert "not a Telegram update: message" in (item.last_error or "")


# --- answers -----------------------------------------------------------------------------------


async def test_start_greets_with_the_contact_button_and_the_phone_joins_the_lead(
    gateway_factory: Callable[..., Awaitable[Gateway]], standin: BotApiStandin
) -> None:
    gw = await gateway_factory()
    await gw.post(update("/start", update_id=1, message_id=1))
    lead = await gw.one_lead()
    lead = await gw.settled(lead["id"], 2)
    greeting = lead["messages"][1]
    assert greeting["author"] == "auto" and greeting["status"] == "sent"
    assert greeting["text"].startswith("Здравствуйте! Напишите, что вас интересует")
    (sent,) = standin.sent
    assert sent.chat_id == CHAT
    assert sent.reply_markup == {
        "keyboard": [[{"text": "Отправить номер", "request_contact": True}]],
        "resize_keyboard": True,
        "one_time_keyboard": True,
    }
    # The customer presses the button: their own contact comes back.
    contact = fixture("updates/contact_own_redacted.tdlib-telegram-bot-api-issue-778.json")
    message = contact["message"]
    message["contact"].update(phone_number="79161234567", user_id=CHAT)
    message["from"]["id"] = CHAT
    message["chat"]["id"] = CHAT
    message.update(message_id=2, date=int(time.time()))
    contact["update_id"] = 2
    await gw.post(contact)

    async def phoned() -> dict[str, Any] | None:
        got = await gw.lead(lead["id"])
        return got if got["contact"]["phones"] == ["+79161234567"] else None

    lead = await eventually(phoned)
    assert lead["events"][-1]["matched_on"] == "conversation"
    assert lead["messages"][-1]["text"] == "+79161234567"


async def test_after_hours_one_answer_per_closed_period_in_the_customers_language(
    gateway_factory: Callable[..., Awaitable[Gateway]], standin: BotApiStandin
) -> None:
    gw = await gateway_factory(calendar=closed_for_telegram())
    await gw.post(update("Hello, do you have lifts?", update_id=1, message_id=1, lang="en"))
    await gw.post(update("And compressors?", update_id=2, message_id=2, lang="en"))
    lead = await gw.one_lead()
    lead = await gw.settled(lead["id"], 3)
    assert [(m["direction"], m["author"]) for m in lead["messages"]] == [
        ("in", "customer"),
        ("out", "auto"),
        ("in", "customer"),
    ]
    (sent,) = standin.sent
    assert sent.text.startswith("Hello! Thank you for your message. We are closed right now")
    assert "after 10:00" in sent.text


async def test_a_seller_reply_and_how_sendmessage_can_answer(
    gateway_factory: Callable[..., Awaitable[Gateway]], standin: BotApiStandin
) -> None:
    gw = await gateway_factory()
    await gw.post(update(update_id=1, message_id=1))
    lead = await gw.one_lead()
    reply = gw.client.post

    async def send(text: str) -> dict[str, Any]:
        resp = await reply(
            f"/v1/leads/{lead['id']}/messages", json={"text": text}, headers=ADMIN_AUTH
        )
        assert resp.status == 202, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body

    standin.throttle(CHAT, 1)  # 429, retry_after 1
    started = time.monotonic()
    first = await send("Подъёмник есть, 450 000 ₽")
    done = await gw.settled(lead["id"], 2)
    assert time.monotonic() - started >= 1.0
    line = next(m for m in done["messages"] if m["id"] == first["message_id"])
    assert line["status"] == "sent" and line["external_id"] == str(standin.sent[-1].message_id)

    standin.blocked.add(CHAT)
    second = await send("Вы здесь?")
    done = await gw.settled(lead["id"], 3)
    line = next(m for m in done["messages"] if m["id"] == second["message_id"])
    # The vendor's own words, as the seller sees them in the lead.
    assert (line["status"], line["status_reason"]) == (
        "undeliverable",
        "Forbidden: bot was blocked by the user",
    )
    resp = await reply(
        f"/v1/leads/{lead['id']}/messages", json={"text": "x" * 4097}, headers=ADMIN_AUTH
    )
    assert resp.status == 422
    assert (await resp.json())["fields"]["text"] == "at most 4096 characters on telegram"
    metrics = await gw.metrics()
    assert 'leadgate_telegram_replies_total{bot="shop",result="retry"} 1.0' in metrics
    assert 'leadgate_telegram_replies_total{bot="shop",result="undeliverable"} 1.0' in metrics
    assert 'leadgate_messages_total{account="shop",channel="telegram",result="sent"} 1.0' in metrics


async def test_a_reply_telegram_took_without_answering_is_unconfirmed_not_sent_twice(
    gateway_factory: Callable[..., Awaitable[Gateway]], standin: BotApiStandin
) -> None:
    """sendMessage did its work and the connection dropped before the answer: Telegram has
    no idempotency key, so a resend could reach the customer twice."""
    gw = await gateway_factory()
    await gw.post(update(update_id=1, message_id=1))
    lead = await gw.one_lead()
    standin.lose_answers("sendMessage")
    resp = await gw.client.post(
        f"/v1/leads/{lead['id']}/messages", json={"text": "450 000 ₽"}, headers=ADMIN_AUTH
    )
    assert resp.status == 202
    done = await gw.settled(lead["id"], 2)
    line = done["messages"][-1]
    assert line["status"] == "unconfirmed"
    assert "no answer after sending" in line["status_reason"]
    assert [s.text for s in standin.sent] == ["450 000 ₽"]
    assert sum(1 for _, m in standin.calls if m.lower() == "sendmessage") == 1
    metrics = await gw.metrics()
    assert 'leadgate_telegram_replies_total{bot="shop",result="unknown"} 1.0' in metrics
    assert (
        'leadgate_messages_total{account="shop",channel="telegram",result="unconfirmed"} 1.0'
        in metrics
    )
    # The customer writes again later: the next reply goes as usual.
    second = await gw.client.post(
        f"/v1/leads/{lead['id']}/messages", json={"text": "Вы здесь?"}, headers=ADMIN_AUTH
    )
    assert second.status == 202
    done = await gw.settled(lead["id"], 3)
    assert done["messages"][-1]["status"] == "sent"


async def test_a_refused_token_halts_the_bot_and_readyz_says_so(
    gateway_factory: Callable[..., Awaitable[Gateway]], standin: BotApiStandin
) -> None:
    gw = await gateway_factory(conversations={"halt_probe_seconds": 0.3})
    await gw.post(update(update_id=1, message_id=1))
    lead = await gw.one_lead()
    revoked = standin.bots.pop(TOKEN)  # the token was revoked at BotFather
    resp = await gw.client.post(
        f"/v1/leads/{lead['id']}/messages", json={"text": "Ответ"}, headers=ADMIN_AUTH
    )
    assert resp.status == 202

    async def named() -> str | None:
        body = await (await gw.client.get("/readyz")).json()
        return next((p for p in body["problems"] if "telegram/shop" in p), None)

    assert "credentials refused" in await eventually(named)
    standin.bots[TOKEN] = revoked  # a new token would be configured; here it is back
    done = await gw.settled(lead["id"], 2)
    assert done["messages"][-1]["status"] == "sent"


# --- polling ----------------------------------------------------------------------------------


async def test_polling_takes_each_update_once_and_confirms_after_storing(
    gateway_factory: Callable[..., Awaitable[Gateway]], standin: BotApiStandin
) -> None:
    for n in range(1, 4):
        standin.push(TOKEN, update(f"сообщение {n}", update_id=500 + n, message_id=n))
    gw = await gateway_factory({"mode": "polling", "secret_token": None, "poll_timeout_seconds": 1})
    lead = await gw.one_lead()

    async def three() -> dict[str, Any] | None:
        got = await gw.lead(lead["id"])
        return got if len(got["messages"]) == 3 else None

    got = await eventually(three)
    assert [m["text"] for m in got["messages"]] == ["сообщение 1", "сообщение 2", "сообщение 3"]
    assert await gw.store.get_checkpoint("telegram:shop:offset") == "504"

    async def confirmed() -> bool:
        return not standin.bots[TOKEN].updates  # the next getUpdates confirmed them

    await eventually(confirmed)
    # The webhook route is not mounted for a polling bot.
    assert (await gw.post(update())).status == 404


async def test_polling_while_a_webhook_is_set_is_a_named_problem(
    gateway_factory: Callable[..., Awaitable[Gateway]], standin: BotApiStandin
) -> None:
    standin.bots[TOKEN].webhook_url = "https://leads.example.ru/v1/telegram/shop"
    gw = await gateway_factory({"mode": "polling", "secret_token": None, "poll_timeout_seconds": 1})

    async def named() -> str | None:
        body = await (await gw.client.get("/readyz")).json()
        return next((p for p in body["problems"] if p.startswith("telegram:")), None)

    problem = await eventually(named)
    assert "webhook is active" in problem and "delete-webhook shop" in problem


# --- the CLI ----------------------------------------------------------------------------------


async def test_set_webhook_info_delete_webhook_and_download(
    tmp_path: Path, standin: BotApiStandin
) -> None:
    config = tmp_path / "leadgate.toml"
    config.write_text(
        f'[store]\npath = "{tmp_path / "leadgate.db"}"\n\n[telegram.bots.shop]\n'
        f'token = "{TOKEN}"\nsecret_token = "{SECRET}"\napi_base = "{standin.url}"\n'
        'webhook_url = "https://leads.example.ru/v1/telegram/shop"\n',
        encoding="utf-8",
    )

    async def run(*argv: str) -> int:
        return await asyncio.to_thread(cli.main, ["-c", str(config), "telegram", *argv])

    assert await run("set-webhook", "shop") == 0
    state = standin.bots[TOKEN]
    assert state.webhook_url == "https://leads.example.ru/v1/telegram/shop"
    assert state.secret_token == SECRET
    assert state.allowed_updates == ["message", "edited_message", "my_chat_member"]
    assert await run("info", "shop") == 0
    state.last_error_date = int(time.time())
    state.last_error_message = "Wrong response from the webhook: 503 Service Unavailable"
    assert await run("info", "shop") == 0
    standin.files["BQACAgIAAxkBAAIBZ2"] = ("documents/file_7.pdf", b"%PDF-1.4 test")
    out = tmp_path / "got.pdf"
    assert await run("download", "shop", "BQACAgIAAxkBAAIBZ2", "-o", str(out)) == 0
    assert out.read_bytes() == b"%PDF-1.4 test"
    assert await run("delete-webhook", "shop") == 0
    assert state.webhook_url == ""
    with pytest.raises(SystemExit, match=re.escape("no bot 'nobody' in [telegram.bots] (shop)")):
        await run("info", "nobody")


async def test_the_cli_says_what_telegram_refused(
    tmp_path: Path, standin: BotApiStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "leadgate.toml"
    config.write_text(
        f'[telegram.bots.shop]\ntoken = "{TOKEN}"\nsecret_token = "{SECRET}"\n'
        f'api_base = "{standin.url}"\n',
        encoding="utf-8",
    )
    standin.bots.pop(TOKEN)
    with pytest.raises(SystemExit) as exited:
        await asyncio.to_thread(cli.main, ["-c", str(config), "telegram", "info", "shop"])
    assert "Unauthorized" in str(exited.value.code)
    assert TOKEN not in str(exited.value.code)


async def test_the_standin_keeps_telegrams_getupdates_contract(standin: BotApiStandin) -> None:
    """Offsets confirm, a newer poller ends the waiting one with 409, a webhook excludes
    polling: what the poller above relies on, checked on the stand-in itself."""
    from aiogram.exceptions import TelegramConflictError

    from connectors.telegram.bots import make_bot
    from connectors.telegram.settings import BotSettings

    bot = make_bot(BotSettings(token=TOKEN, mode="polling", api_base=standin.url))
    other = make_bot(BotSettings(token=TOKEN, mode="polling", api_base=standin.url))
    try:
        first = standin.push(TOKEN, update("раз", message_id=1) | {"update_id": 10})
        standin.push(TOKEN, update("два", message_id=2) | {"update_id": 11})
        got = await bot.get_updates(timeout=0)
        assert [u.update_id for u in got] == [first, 11]
        assert [u.update_id for u in await bot.get_updates(offset=11, timeout=0)] == [11]
        waiting = asyncio.create_task(bot.get_updates(offset=12, timeout=5))
        await asyncio.sleep(0.2)
        newer = asyncio.create_task(other.get_updates(offset=12, timeout=1))
        with pytest.raises(TelegramConflictError, match="terminated by other getUpdates"):
            await waiting
        assert await newer == []
        standin.bots[TOKEN].webhook_url = "https://leads.example.ru/v1/telegram/shop"
        with pytest.raises(TelegramConflictError, match="webhook is active"):
            await bot.get_updates(timeout=0)
    finally:
        await bot.session.close()
        await other.session.close()
