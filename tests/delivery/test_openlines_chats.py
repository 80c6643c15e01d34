"""Conversations through Bitrix24 Open Lines and back, against the portal stand-in and the
test chat connector (tests/chat_connector.py): customers' messages copied into the line
in order (an access token expiring mid-way), a seller's answer arriving twice sent once on
the customer's channel, its delivery reported to the line, the dialog's end recorded,
the CRM lead leadgate made linked to the chat and no second one made."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient
from b24_openlines_standin import Bitrix24AppStandIn
from chat_connector import SECRET, ChatTestConnector, ScriptedSender, spec
from conftest import ADMIN_AUTH, make_settings
from helpers import fast_delivery
from openlines_helpers import install, openlines_section, portal

from gateway.conversations import SendResult, SendStatus
from gateway.delivery.openlines.answers import dialog_checkpoint
from gateway.delivery.openlines.service import CLIENT
from gateway.delivery.openlines.steps import StepStatus, run_setup
from gateway.hours import DAYS
from gateway.inbox import InboxItem, InboxState
from gateway.keys import PIPELINE, SETTINGS, STORE
from gateway.store.base import OutboxKind, OutboxState
from gateway.web import create_app

__all__ = ["portal"]

Client = TestClient[Any, Any]
T = TypeVar("T")
MOSCOW = ZoneInfo("Europe/Moscow")


def open_now() -> dict[str, Any]:
    week = {day: ["00:00-24:00"] for day in DAYS}
    return {"channels": {"vk": week}, "extra_workdays": [str(datetime.now(MOSCOW).date())]}


async def eventually(check: Callable[[], Awaitable[T | None]], within: float = 15.0) -> T:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class Line:
    """A gateway with the test chat connector and Open Lines, and the portal stand-in."""

    def __init__(
        self,
        client: Client,
        portal: Bitrix24AppStandIn,
        sender: ScriptedSender,
        connector: ChatTestConnector,
    ) -> None:
        self.client = client
        self.portal = portal
        self.sender = sender
        self.connector = connector
        self.store = client.app[STORE]
        self.update_id = 0

    async def customer(self, text: str, **update: Any) -> None:
        self.update_id += 1
        update.update(update_id=self.update_id, message_id=self.update_id, text=text)
        update.setdefault("chat", "42")
        resp = await self.client.post(
            "/v1/testchat/shop", json=update, headers={"X-Secret": SECRET}
        )
        assert resp.status == 200, await resp.text()

    async def mirrored(self, count: int) -> list[Any]:
        async def enough() -> list[Any] | None:
            return self.portal.sent if len(self.portal.sent) >= count else None

        return await eventually(enough)

    async def event(self, body: bytes) -> tuple[int, Any]:
        return await self.portal.post(str(self.client.make_url("/v1/openlines/events")), body)

    async def lead(self) -> dict[str, Any]:
        resp = await self.client.get("/v1/leads", headers=ADMIN_AUTH)
        (only,) = (await resp.json())["leads"]
        resp = await self.client.get(f"/v1/leads/{only['id']}", headers=ADMIN_AUTH)
        body: dict[str, Any] = await resp.json()
        return body

    async def conversation_id(self) -> str:
        lead = await self.lead()
        (conversation,) = lead["conversations"]
        return str(conversation["id"])

    async def readyz(self) -> list[str]:
        resp = await self.client.get("/readyz")
        problems: list[str] = (await resp.json())["problems"]
        return problems


@pytest.fixture
def line_factory(
    aiohttp_client: Callable[..., Any], tmp_path: Path, portal: Bitrix24AppStandIn
) -> Callable[..., Awaitable[Line]]:
    async def make(sender: ScriptedSender | None = None, **extra: Any) -> Line:
        sender = sender or ScriptedSender()
        built: list[ChatTestConnector] = []
        delivery = fast_delivery(portal.webhook_url)
        delivery["wait_seconds"] = 0.05
        settings = make_settings(
            tmp_path,
            calendar=open_now(),
            delivery=delivery,
            conversations={
                "backoff_initial_seconds": 0.05,
                "backoff_max_seconds": 0.1,
                "poll_seconds": 0.05,
            },
            openlines=openlines_section(portal, **extra),
        )
        client = await aiohttp_client(create_app(settings, specs=[spec(sender, built)]))
        assert (await install(portal, client))[0] == 200
        steps = await run_setup(client.app[CLIENT], client.app[SETTINGS].openlines)
        assert all(s.status is not StepStatus.FAILED for s in steps), steps
        return Line(client, portal, sender, built[0])

    return make


async def test_a_conversation_through_open_lines_and_back(
    line_factory: Callable[..., Awaitable[Line]], portal: Bitrix24AppStandIn
) -> None:
    line = await line_factory()
    await line.customer(
        "Здравствуйте, нужен подъёмник", name="Иван Петров 🚜", phone="+79161234567"
    )
    (first,) = await line.mirrored(1)
    conversation_id = await line.conversation_id()
    assert first.line == 1
    assert first.chat["id"] == conversation_id  # what the seller's answers will name
    assert first.user["id"] == "vk:42"
    assert (first.user["name"], first.user["last_name"]) == ("Иван", "Петров")
    assert first.user["phone"] == "+79161234567"
    assert first.message["text"] == "Здравствуйте, нужен подъёмник"
    assert first.message["disable_crm"] == "Y"  # Open Lines makes no lead of its own

    # The CRM delivery made leadgate's lead in the same portal.
    await eventually(lambda: _async(len(portal.leads) == 1))
    (crm_id,) = portal.leads

    # The access token runs out between two messages: renewed once, nothing lost, in order.
    portal.expire_access()
    await line.customer("И ещё компрессор")
    await line.customer("Когда сможете привезти?")
    sent = await line.mirrored(3)
    assert [s.message["text"] for s in sent] == [
        "Здравствуйте, нужен подъёмник",
        "И ещё компрессор",
        "Когда сможете привезти?",
    ]
    assert portal.app.refreshes == 1
    assert ("imconnector.send.messages.json", 401) in [(e.method, e.status) for e in portal.log]
    assert all(s.chat["id"] == conversation_id for s in sent)
    # Once the CRM lead exists, the chat links to it, and the lead to the chat.
    assert sent[-1].chat["url"] == f"https://portal.example.bitrix24.ru/crm/lead/details/{crm_id}/"
    await eventually(lambda: _async(bool(portal.comments_on(crm_id))))
    (comment,) = [c for c in portal.comments_on(crm_id) if "открытой линии" in c]
    assert f"IM_DIALOG=chat{portal.chat_of(conversation_id)}" in comment

    # A seller answers in the line; Bitrix24 delivers the event twice.
    answer = portal.answer_form(
        conversation_id,
        "[b]Анна:[/b] [br]Подъёмник есть, 450 000 ₽",
        im_message_id=86497,
        user_id=1,
    )
    assert await line.event(answer) == (200, {"status": "ok"})
    assert await line.event(answer) == (200, {"status": "ok"})

    async def report() -> list[dict[str, Any]] | None:
        return portal.delivered or None

    (delivered,) = await eventually(report)
    assert len(line.sender.sent) == 1  # sent once on the customer's channel
    (out,) = line.sender.sent
    assert out.text == "Анна:\nПодъёмник есть, 450 000 ₽"
    assert out.chat == "42"
    # The ids as the event carried them (every value of an event is a string).
    im_chat = str(portal.chat_of(conversation_id))
    assert delivered["im"] == {"chat_id": im_chat, "message_id": "86497"}
    assert delivered["message"]["id"] == ["86497"]  # an array, as Bitrix24 wants it
    assert delivered["chat"] == {"id": conversation_id}
    await asyncio.sleep(0.3)
    assert len(portal.delivered) == 1 and len(line.sender.sent) == 1

    lead = await line.lead()
    replies = [m for m in lead["messages"] if m["direction"] == "out"]
    assert [(m["author"], m["status"]) for m in replies] == [("seller:anna", "sent")]

    # The line closes the dialog: recorded.
    assert (await line.event(portal.finish_form(conversation_id)))[0] == 200

    async def finished() -> str | None:
        return await line.store.get_checkpoint(dialog_checkpoint(conversation_id))

    assert '"session"' in await eventually(finished)
    # One lead in the CRM for this person: leadgate's.
    assert len(portal.leads) == 1
    assert not [p for p in await line.readyz() if p.startswith("openlines")]


async def _async(value: bool) -> bool:
    return value


async def test_an_answer_that_cannot_be_delivered_is_not_reported(
    line_factory: Callable[..., Awaitable[Line]], portal: Bitrix24AppStandIn
) -> None:
    sender = ScriptedSender(
        script=[SendResult(SendStatus.UNDELIVERABLE, reason="bot was blocked by the user")]
    )
    line = await line_factory(sender)
    await line.customer("Здравствуйте")
    await line.mirrored(1)
    conversation_id = await line.conversation_id()
    assert (await line.event(portal.answer_form(conversation_id, "Добрый день")))[0] == 200

    async def closed() -> list[Any] | None:
        rows = [
            r
            for r in await line.store.outbox(limit=100)
            if r.kind is OutboxKind.MESSAGE_STATUS and r.state is OutboxState.CLOSED
        ]
        return rows or None

    (row,) = await eventually(closed)
    assert "bot was blocked by the user" in (row.last_error or "")
    assert portal.delivered == []  # Open Lines shows the answer as not delivered


async def test_a_long_answer_is_split_and_reported_once(
    line_factory: Callable[..., Awaitable[Line]], portal: Bitrix24AppStandIn
) -> None:
    line = await line_factory(ScriptedSender(max_text=40))
    await line.customer("Расскажите подробнее")
    await line.mirrored(1)
    conversation_id = await line.conversation_id()
    long = "Подъёмник двухстоечный, грузоподъёмность 4 тонны, гарантия два года, доставка."
    assert (await line.event(portal.answer_form(conversation_id, long)))[0] == 200

    async def report() -> list[dict[str, Any]] | None:
        return portal.delivered or None

    await eventually(report)
    parts = [m.text for m in line.sender.sent]
    assert len(parts) > 1 and all(len(p) <= 40 for p in parts)
    assert " ".join(parts) == long
    await asyncio.sleep(0.2)
    assert len(portal.delivered) == 1


async def test_while_open_lines_is_down_messages_wait_and_replies_go_on(
    line_factory: Callable[..., Awaitable[Line]], portal: Bitrix24AppStandIn
) -> None:
    line = await line_factory()
    await line.customer("Первое")
    await line.mirrored(1)
    conversation_id = await line.conversation_id()
    portal.fail(
        times=3, status=503, error="QUERY_LIMIT_EXCEEDED", command="imconnector.send.messages"
    )
    portal.fail(
        times=2, status=500, error="INTERNAL_SERVER_ERROR", command="imconnector.send.messages"
    )
    await line.customer("Второе")
    await line.customer("Третье")
    # A reply through the API is not held up by the line being down.
    lead = await line.lead()
    resp = await line.client.post(
        f"/v1/leads/{lead['id']}/messages", json={"text": "Ответ"}, headers=ADMIN_AUTH
    )
    assert resp.status == 202
    sent = await line.mirrored(3)
    assert [s.message["text"] for s in sent] == ["Первое", "Второе", "Третье"]
    assert [m.text for m in line.sender.sent] == ["Ответ"]
    assert all(s.chat["id"] == conversation_id for s in sent)


async def test_the_connector_switched_off_on_the_line(
    line_factory: Callable[..., Awaitable[Line]], portal: Bitrix24AppStandIn
) -> None:
    line = await line_factory()
    body = portal.event_form("ONIMCONNECTORSTATUSDELETE", {"CONNECTOR": "leadgate", "LINE": "1"})
    assert (await line.event(body))[0] == 200
    problems = await line.readyz()
    assert any("switched off on line 1" in p for p in problems), problems
    steps = await run_setup(line.client.app[CLIENT], line.client.app[SETTINGS].openlines)
    assert all(s.status is not StepStatus.FAILED for s in steps)
    assert not [p for p in await line.readyz() if p.startswith("openlines")]


async def test_an_answer_for_a_chat_leadgate_never_copied_is_kept_dead(
    line_factory: Callable[..., Awaitable[Line]], portal: Bitrix24AppStandIn
) -> None:
    line = await line_factory()
    assert (await line.event(portal.answer_form("someone-elses-chat", "Здравствуйте")))[0] == 200

    async def dead() -> list[Any] | None:
        found = await line.store.list_inbox(InboxState.DEAD)
        return found or None

    (entry,) = await eventually(dead)
    assert "not a conversation leadgate copied there" in (entry.last_error or "")
    assert line.sender.sent == []


async def test_events_with_answers_lacking_their_ids_are_quarantined(
    line_factory: Callable[..., Awaitable[Line]], portal: Bitrix24AppStandIn
) -> None:
    line = await line_factory()
    body = portal.event_form(
        "ONIMCONNECTORMESSAGEADD", {"MESSAGES": [{"message": {"text": "без чата"}}]}
    )
    status, answer = await line.event(body)
    assert status == 400
    assert answer["error"] == "invalid_event"
    (kept,) = await line.store.list_quarantine("openlines")
    assert b"%D0%B1%D0%B5%D0%B7" in kept.body  # «без» as it came


async def test_an_answer_handled_again_after_a_crash_is_queued_once(
    line_factory: Callable[..., Awaitable[Line]], portal: Bitrix24AppStandIn
) -> None:
    """The inbox hands an entry over again when its handler died before marking it done:
    the same answer must not reach the customer twice."""
    line = await line_factory()
    await line.customer("Здравствуйте")
    await line.mirrored(1)
    conversation_id = await line.conversation_id()
    body = portal.answer_form(conversation_id, "Добрый день", im_message_id=555)
    handler = line.client.app[PIPELINE].inbox.handlers["openlines"]
    item = InboxItem(
        id=1,
        channel="openlines",
        account=portal.member_id,
        key=f"{portal.chat_of(conversation_id)}:555",
        body=body,
        headers={},
        state=InboxState.PENDING,
        attempts=0,
        received_at=datetime.now(MOSCOW),
        next_attempt_at=datetime.now(MOSCOW),
    )
    await handler(item)
    await handler(item)  # again, as after a crash between handling and done

    async def report() -> list[dict[str, Any]] | None:
        return portal.delivered or None

    await eventually(report)
    await asyncio.sleep(0.2)
    assert [m.text for m in line.sender.sent] == ["Добрый день"]
    assert len(portal.delivered) == 1
    lead = await line.lead()
    assert len([m for m in lead["messages"] if m["direction"] == "out"]) == 1


# Every kind of BB-code a customer could type to act in the seller's chat (Bitrix24's
# formatting reference: links, mentions, chat links, buttons, icons, attachments).
HOSTILE = (
    "[URL=https://evil.example/pay]Оплатить заказ[/URL] [b]срочно[/B] [USER=1]Анна[/USER] "
    "[CHAT=5]общий чат[/CHAT] [SEND=Оплачено]Я оплатил[/SEND] [PUT=/pay]Ввести[/PUT] "
    "[ICON=https://evil.example/i.png size=1] [ br ] [ / url] [*] [1] [см. выше] a[b"
)


async def test_customer_bb_code_reaches_the_sellers_chat_inert_and_readable(
    line_factory: Callable[..., Awaitable[Line]],
) -> None:
    line = await line_factory()
    await line.customer(HOSTILE, name="[USER=1]Директор[/USER] [B]Петров[/B]")
    (sent,) = await line.mirrored(1)
    shown = [
        sent.message["text"],
        sent.user["name"],
        sent.user.get("last_name", ""),
        sent.chat["name"],
    ]
    tag = re.compile(r"\[\s*/?\s*[A-Za-z*]")
    for text in shown:
        assert not tag.search(text), text  # nothing Bitrix24 would parse as a tag
    # Readable: exactly what the customer typed, the tags' "[" shown as "［".
    assert sent.message["text"].replace("［", "[") == HOSTILE
    assert "[1] [см. выше]" in sent.message["text"]  # ordinary brackets stay
    assert "Директор" in sent.user["name"] + sent.user.get("last_name", "")
