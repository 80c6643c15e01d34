"""The conversation core end to end, through a test-only chat connector (tests/chat_connector):
push input stored in the inbox before the 200 and handled after, a thread per chat, the
transcript on the lead, the after-hours answer once per closed period in the customer's
language, a seller's reply through POST /v1/leads/{id}/messages, and every way a send can
end (sent, retried after the vendor's retry_after, undeliverable, halted, unconfirmed).
Every test runs on the SQLite store and on the Redis store."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient
from chat_connector import SECRET, ChatTestConnector, ScriptedSender, spec
from conftest import ADMIN_AUTH, make_settings

from gateway.conversations import SendResult, SendStatus
from gateway.hours import DAYS
from gateway.i18n import describe_opening
from gateway.keys import STORE
from gateway.store.base import OutboxState
from gateway.web import create_app

Client = TestClient[Any, Any]
T = TypeVar("T")
MOSCOW = ZoneInfo("Europe/Moscow")


def closed_now_calendar() -> dict[str, Any]:
    """The vk channel opens only on the weekday after tomorrow, 10:00-11:00: closed now."""
    later = datetime.now(MOSCOW) + timedelta(days=2)
    return {"channels": {"vk": {DAYS[later.weekday()]: ["10:00-11:00"]}}}


def open_now_calendar() -> dict[str, Any]:
    today = datetime.now(MOSCOW).date()
    week = {day: ["00:00-24:00"] for day in DAYS}
    return {"channels": {"vk": week}, "extra_workdays": [str(today)]}


def openapi_check(schema: str, instance: Any) -> None:
    """`instance` is valid as docs/openapi.yaml's components/schemas/`schema`."""
    import yaml
    from jsonschema import Draft202012Validator

    spec = yaml.safe_load((Path(__file__).parents[1] / "docs" / "openapi.yaml").read_text())
    root = {"components": spec["components"], "$ref": f"#/components/schemas/{schema}"}
    errors = [e.message for e in Draft202012Validator(root).iter_errors(instance)]
    assert not errors, errors


async def eventually(check: Callable[[], Awaitable[T | None]], within: float = 10.0) -> T:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class Chat:
    """A running gateway with the test connector, and helpers to talk to it."""

    def __init__(self, client: Client, sender: ScriptedSender, connector: ChatTestConnector):
        self.client = client
        self.sender = sender
        self.connector = connector
        self.store = client.app[STORE]
        self.update_id = 0

    async def post(self, account: str = "shop", **update: Any) -> int:
        if "update_id" not in update:
            self.update_id += 1
            update["update_id"] = self.update_id
        update.setdefault("chat", "42")
        update.setdefault("message_id", update["update_id"])
        resp = await self.client.post(
            f"/v1/testchat/{account}", json=update, headers={"X-Secret": SECRET}
        )
        assert resp.status == 200, await resp.text()
        return int(update["update_id"])

    async def handled(self, update_id: int) -> None:
        async def seen() -> bool:
            return update_id in self.connector.handled

        await eventually(seen)

    async def lead(self, lead_id: str) -> dict[str, Any]:
        resp = await self.client.get(f"/v1/leads/{lead_id}", headers=ADMIN_AUTH)
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body

    async def only_lead_id(self) -> str:
        resp = await self.client.get("/v1/leads", headers=ADMIN_AUTH)
        leads = (await resp.json())["leads"]
        assert len(leads) == 1, leads
        return str(leads[0]["id"])

    async def sends(self, count: int) -> None:
        async def enough() -> bool:
            return len(self.sender.sent) >= count

        await eventually(enough)

    async def settled(self, lead_id: str) -> dict[str, Any]:
        """The lead once no outbound message is queued or retrying any more."""

        async def calm() -> dict[str, Any] | None:
            lead = await self.lead(lead_id)
            busy = [m for m in lead["messages"] if m["status"] in ("queued", "retrying")]
            return None if busy else lead

        return await eventually(calm)


@pytest.fixture(params=["sqlite", "redis"])
def chat_factory(
    request: pytest.FixtureRequest, aiohttp_client: Callable[..., Any], tmp_path: Path
) -> Callable[..., Awaitable[Chat]]:
    store: dict[str, Any] = {"path": str(tmp_path / "leadgate.db")}
    if request.param == "redis":
        target = request.getfixturevalue("redis_target")
        store = {"kind": "redis", "url": target.url, "prefix": target.prefix}

    async def make(sender: ScriptedSender | None = None, **settings: Any) -> Chat:
        sender = sender or ScriptedSender()
        built: list[ChatTestConnector] = []
        settings.setdefault("store", store)
        settings.setdefault("calendar", closed_now_calendar())
        settings.setdefault(
            "conversations", {"backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.1}
        )
        app = create_app(make_settings(tmp_path, **settings), specs=[spec(sender, built)])
        client = await aiohttp_client(app)
        return Chat(client, sender, built[0])

    return make


async def test_a_chat_becomes_one_lead_with_its_transcript_and_one_after_hours_answer(
    chat_factory: Callable[..., Awaitable[Chat]],
) -> None:
    chat = await chat_factory()
    first = await chat.post(text="Здравствуйте, нужен подъёмник", lang="ru", name="Иван")
    await chat.handled(first)
    lead_id = await chat.only_lead_id()
    second = await chat.post(text="И ещё компрессор")
    await chat.handled(second)
    assert await chat.only_lead_id() == lead_id  # the same thread joins the same lead

    lead = await chat.settled(lead_id)
    assert [e["matched_on"] for e in lead["events"]] == [None, "conversation"]
    conversations = lead["conversations"]
    assert len(conversations) == 1
    assert conversations[0]["channel"] == "vk"
    assert conversations[0]["account"] == "shop"
    assert conversations[0]["chat"] == "42"
    assert conversations[0]["handle"] == "vk:42"
    lines = [(m["direction"], m["author"], m["status"]) for m in lead["messages"]]
    # The after-hours answer follows the first message only; once per closed period.
    assert lines == [
        ("in", "customer", "received"),
        ("out", "auto", "sent"),
        ("in", "customer", "received"),
    ]
    answer = lead["messages"][1]
    opening = datetime.fromisoformat(lead["next_open_at"])
    assert datetime.fromisoformat(conversations[0]["auto_answered_for"]) == opening
    when = describe_opening(opening, datetime.fromisoformat(answer["at"]), "Europe/Moscow", "ru")
    assert when in answer["text"] and "после 10:00" in when
    assert answer["external_id"] == "out-1"
    assert len(chat.sender.sent) == 1
    assert chat.sender.sent[0].chat == "42" and chat.sender.sent[0].account == "shop"


async def test_the_after_hours_answer_speaks_the_customers_language(
    chat_factory: Callable[..., Awaitable[Chat]],
) -> None:
    chat = await chat_factory()
    await chat.handled(await chat.post(text="Hello, I need a lift", lang="en-US"))
    lead = await chat.settled(await chat.only_lead_id())
    answer = lead["messages"][1]["text"]
    assert answer.startswith("Hello! Thank you for your message.")
    assert "after 10:00" in answer and "после" not in answer
    assert lead["conversations"][0]["locale"] == "en-US"


async def test_configured_texts_and_accounts_that_stay_quiet(
    chat_factory: Callable[..., Awaitable[Chat]],
) -> None:
    texts = {"ru": "Мы откроемся {when}.", "en": "We open {when}."}
    chat = await chat_factory(conversations={"after_hours_text": texts})
    await chat.handled(await chat.post(text="Добрый вечер", lang="ru"))
    # The "quiet" account switched the answer off for itself (ChatAccount).
    await chat.handled(await chat.post(account="quiet", chat="7", text="Добрый вечер"))
    resp = await chat.client.get("/v1/leads", headers=ADMIN_AUTH)
    leads = {lead["id"]: lead for lead in (await resp.json())["leads"]}
    assert len(leads) == 2
    texts_seen = []
    for lead_id in leads:
        lead = await chat.settled(lead_id)
        account = lead["conversations"][0]["account"]
        outbound = [m["text"] for m in lead["messages"] if m["direction"] == "out"]
        texts_seen.append((account, outbound))
    by_account = dict(texts_seen)
    assert by_account["quiet"] == []
    assert len(by_account["shop"]) == 1 and by_account["shop"][0].startswith("Мы откроемся в")


async def test_no_answer_in_working_time_nor_to_echoes_or_edits(
    chat_factory: Callable[..., Awaitable[Chat]],
) -> None:
    chat = await chat_factory(calendar=open_now_calendar())
    await chat.handled(await chat.post(text="Добрый день"))
    lead_id = await chat.only_lead_id()
    await chat.handled(await chat.post(text="исправлено", edit_of=1))
    lead = await chat.lead(lead_id)
    assert [m["direction"] for m in lead["messages"]] == ["in"]
    # The edit rewrote the original line (and is kept as an event of its own).
    assert lead["messages"][0]["text"] == "исправлено"
    assert lead["messages"][0]["edited_at"] is not None
    assert len(lead["events"]) == 2
    assert chat.sender.sent == []


async def test_a_chats_message_retried_after_a_failure_is_not_overtaken(
    chat_factory: Callable[..., Awaitable[Chat]],
) -> None:
    """The first message of chat 42 fails once and waits for its retry: the second message
    of chat 42 waits for it, while another chat's message goes on."""
    chat = await chat_factory(
        calendar=open_now_calendar(),
        inbox={"backoff_initial_seconds": 0.3, "backoff_max_seconds": 0.3},
    )
    chat.connector.fail_once.add(1)
    await chat.post(update_id=1, chat="42", text="первое", phone="+79161234567")
    await chat.post(update_id=2, chat="42", text="второе")
    await chat.post(update_id=3, chat="77", text="другой чат")
    for update_id in (1, 2, 3):
        await chat.handled(update_id)
    handled = chat.connector.handled
    assert handled.index(3) < handled.index(1) < handled.index(2), handled
    resp = await chat.client.get("/v1/leads", headers=ADMIN_AUTH)
    (lead,) = [x for x in (await resp.json())["leads"] if "vk:42" in x["contact"]["handles"]]
    lines = (await chat.lead(lead["id"]))["messages"]
    assert [m["text"] for m in lines if m["direction"] == "in"] == ["первое", "второе"]
    # The first message's own lead opened with its phone: it was not dropped by the wait.
    assert lead["contact"]["phones"] == ["+79161234567"]


async def test_an_edit_that_comes_before_its_message_is_kept_on_one_line(
    chat_factory: Callable[..., Awaitable[Chat]],
) -> None:
    """The vendor delivered the edit first (the original's delivery was retried later):
    the edited text stays, on one line, and the original joins it rather than adding one."""
    chat = await chat_factory(calendar=open_now_calendar())
    written = int(datetime.now(UTC).timestamp()) - 60
    await chat.handled(
        await chat.post(update_id=2, message_id=2, text="исправлено", edit_of=1, date=written + 30)
    )
    await chat.handled(await chat.post(update_id=1, message_id=1, text="опечтка", date=written))
    lead = await chat.lead(await chat.only_lead_id())
    (line,) = [m for m in lead["messages"] if m["direction"] == "in"]
    assert line["text"] == "исправлено"
    assert line["edited_at"] is not None
    # The line is dated when the customer wrote it, not when they edited it.
    assert datetime.fromisoformat(line["at"]) == datetime.fromtimestamp(written, UTC)
    assert len(lead["events"]) == 2  # both are kept as events


async def test_a_greeting_goes_once_with_its_event_even_when_the_update_comes_twice(
    chat_factory: Callable[..., Awaitable[Chat]],
) -> None:
    chat = await chat_factory(calendar=open_now_calendar())
    update = await chat.post(text="/start", start=True)
    await chat.handled(update)
    await chat.post(update_id=update, text="/start", start=True)  # the vendor's retry
    lead = await chat.settled(await chat.only_lead_id())
    assert [m["author"] for m in lead["messages"]] == ["customer", "auto"]
    assert lead["messages"][1]["ask_phone"] is True
    assert chat.connector.handled == [update]  # the duplicate was not even handled
    assert len(chat.sender.sent) == 1 and chat.sender.sent[0].ask_phone


async def test_a_sellers_reply_goes_back_to_the_chat(
    chat_factory: Callable[..., Awaitable[Chat]],
) -> None:
    chat = await chat_factory(calendar=open_now_calendar())
    await chat.handled(await chat.post(text="Сколько стоит?"))
    lead_id = await chat.only_lead_id()
    resp = await chat.client.post(
        f"/v1/leads/{lead_id}/messages",
        json={"text": "Здравствуйте! 450 000 ₽", "seller": "anna"},
        headers=ADMIN_AUTH,
    )
    assert resp.status == 202
    body = await resp.json()
    assert body["status"] == "queued"
    lead = await chat.settled(lead_id)
    reply = lead["messages"][-1]
    assert reply["id"] == body["message_id"]
    assert reply["conversation_id"] == body["conversation_id"] == lead["conversations"][0]["id"]
    assert (reply["author"], reply["status"], reply["external_id"]) == (
        "seller:anna",
        "sent",
        "out-1",
    )
    assert chat.sender.sent[0].text == "Здравствуйте! 450 000 ₽"
    assert lead["conversations"][0]["last_outbound_at"] is not None


async def test_the_reply_api_refuses_clearly(chat_factory: Callable[..., Awaitable[Chat]]) -> None:
    chat = await chat_factory(calendar=open_now_calendar())
    await chat.handled(await chat.post(text="Привет"))
    lead_id = await chat.only_lead_id()
    post = chat.client.post

    resp = await post("/v1/leads/NOPE/messages", json={"text": "x"}, headers=ADMIN_AUTH)
    assert (resp.status, (await resp.json())["error"]) == (404, "not_found")
    resp = await post(f"/v1/leads/{lead_id}/messages", json={"text": "x"})
    assert resp.status == 401
    for body, field in [
        ({"text": "  "}, "text"),
        ({"text": "x" * 101}, "text"),  # the sender's own limit (100 in this test)
        ({"text": "x", "seller": "nobody"}, "seller"),
        ({"text": "x", "extra": 1}, "extra"),
    ]:
        resp = await post(f"/v1/leads/{lead_id}/messages", json=body, headers=ADMIN_AUTH)
        assert resp.status == 422, body
        assert field in (await resp.json())["fields"], body
    resp = await post(
        f"/v1/leads/{lead_id}/messages",
        json={"text": "x", "conversation_id": "01NOTONEOFTHISLEADS"},
        headers=ADMIN_AUTH,
    )
    assert (resp.status, (await resp.json())["error"]) == (409, "no_conversation")


async def test_a_reply_to_a_lead_of_several_chats_must_name_one(
    chat_factory: Callable[..., Awaitable[Chat]],
) -> None:
    """The customer wrote in two chats (one phone): a reply without conversation_id is not
    guessed into one of them but refused with the choices; naming one sends it there."""
    chat = await chat_factory(calendar=open_now_calendar())
    await chat.handled(await chat.post(chat="42", text="Сколько стоит?", phone="+79161234567"))
    await chat.handled(await chat.post(chat="43", text="Это я же", phone="+79161234567"))
    lead_id = await chat.only_lead_id()
    conversations = (await chat.lead(lead_id))["conversations"]
    assert {c["chat"] for c in conversations} == {"42", "43"}

    resp = await chat.client.post(
        f"/v1/leads/{lead_id}/messages", json={"text": "Здравствуйте"}, headers=ADMIN_AUTH
    )
    assert resp.status == 409
    body = await resp.json()
    assert body["error"] == "conversation_required"
    openapi_check("ConversationRequired", body)
    by_id = {c["id"]: c for c in conversations}
    assert [c["id"] for c in body["conversations"]] == sorted(
        by_id, key=lambda i: by_id[i]["last_inbound_at"], reverse=True
    )
    for offered in body["conversations"]:
        full = by_id[offered["id"]]
        assert offered == {k: full[k] for k in ("id", "channel", "account", "last_inbound_at")}
    assert chat.sender.sent == []  # nothing was queued

    first = next(c for c in conversations if c["chat"] == "42")
    resp = await chat.client.post(
        f"/v1/leads/{lead_id}/messages",
        json={"text": "Здравствуйте", "conversation_id": first["id"]},
        headers=ADMIN_AUTH,
    )
    assert resp.status == 202
    assert (await resp.json())["conversation_id"] == first["id"]
    await chat.sends(1)
    assert chat.sender.sent[0].chat == "42"


async def test_a_retried_reply_with_its_idempotency_key_reaches_the_customer_once(
    chat_factory: Callable[..., Awaitable[Chat]],
) -> None:
    chat = await chat_factory(calendar=open_now_calendar())
    await chat.handled(await chat.post(text="Сколько стоит?"))
    lead_id = await chat.only_lead_id()
    url = f"/v1/leads/{lead_id}/messages"
    keyed = {**ADMIN_AUTH, "Idempotency-Key": "reply-7f3a"}
    reply = {"text": "450 000 ₽", "seller": "anna"}

    # The client timed out and tries again — twice at once, then once more later.
    first, second = await asyncio.gather(
        chat.client.post(url, json=reply, headers=keyed),
        chat.client.post(url, json=reply, headers=keyed),
    )
    assert (first.status, second.status) == (202, 202)
    original = await first.json()
    assert await second.json() == original
    await chat.sends(1)
    again = await chat.client.post(url, json=reply, headers=keyed)
    assert again.status == 202
    assert await again.json() == original  # the original answer, though it is sent by now
    assert again.headers["Idempotent-Replayed"] == "true"

    # The same key for another message is a client's bug, named, and queues nothing.
    other = await chat.client.post(url, json={**reply, "text": "500 000 ₽"}, headers=keyed)
    assert other.status == 422
    refusal = await other.json()
    assert refusal["error"] == "idempotency_key_reused"
    assert "reply-7f3a" in refusal["detail"]
    other = await chat.client.post(url, json={"text": "450 000 ₽"}, headers=keyed)
    assert (other.status, (await other.json())["error"]) == (422, "idempotency_key_reused")

    # Another key is another message; a bad key is refused before anything is queued.
    fresh = await chat.client.post(
        url, json=reply, headers={**ADMIN_AUTH, "Idempotency-Key": "reply-8b21"}
    )
    assert fresh.status == 202
    assert (await fresh.json())["message_id"] != original["message_id"]
    bad = await chat.client.post(url, json=reply, headers={**ADMIN_AUTH, "Idempotency-Key": "a b"})
    assert (bad.status, (await bad.json())["error"]) == (400, "invalid_idempotency_key")

    lead = await chat.settled(lead_id)
    out = [m for m in lead["messages"] if m["direction"] == "out"]
    assert [m["text"] for m in out] == ["450 000 ₽", "450 000 ₽"]
    assert out[0]["id"] == original["message_id"]
    assert [m.text for m in chat.sender.sent] == ["450 000 ₽", "450 000 ₽"]


async def test_a_reply_to_a_lead_without_a_chat_is_409(
    chat_factory: Callable[..., Awaitable[Chat]],
) -> None:
    chat = await chat_factory()
    # A webform lead, recorded the one way leads are made: the pipeline.
    from gateway.keys import PIPELINE
    from gateway.models import Channel, Contact, LeadEvent

    now = datetime.now(UTC)
    receipt = await chat.client.app[PIPELINE].accept(
        LeadEvent(
            channel=Channel.WEBFORM,
            external_id="form-1",
            occurred_at=now,
            received_at=now,
            contact=Contact(name="Ира", phones=("+79161112233",)),
        )
    )
    resp = await chat.client.post(
        f"/v1/leads/{receipt.lead_id}/messages", json={"text": "Добрый день"}, headers=ADMIN_AUTH
    )
    assert resp.status == 409
    assert (await resp.json())["error"] == "no_conversation"


async def test_a_customer_who_then_calls_is_one_lead(
    chat_factory: Callable[..., Awaitable[Chat]],
) -> None:
    from gateway.keys import PIPELINE
    from gateway.models import Channel, Contact, LeadEvent

    chat = await chat_factory(calendar=open_now_calendar())
    await chat.handled(await chat.post(text="Мой номер", phone="+79161234567"))
    lead_id = await chat.only_lead_id()
    now = datetime.now(UTC)
    receipt = await chat.client.app[PIPELINE].accept(
        LeadEvent(
            channel=Channel.PHONE,
            external_id="call-1",
            occurred_at=now,
            received_at=now,
            contact=Contact(phones=("+79161234567",)),
        )
    )
    assert receipt.lead_id == lead_id
    # ...and a reply still goes to the chat.
    resp = await chat.client.post(
        f"/v1/leads/{lead_id}/messages", json={"text": "Перезвоним"}, headers=ADMIN_AUTH
    )
    assert resp.status == 202


async def test_vendor_refusals_end_in_clear_states(
    chat_factory: Callable[..., Awaitable[Chat]],
) -> None:
    sender = ScriptedSender(
        script=[
            SendResult(SendStatus.RETRY, reason="Too Many Requests: retry after 1", retry_after=1),
            SendResult(SendStatus.UNDELIVERABLE, reason="Forbidden: bot was blocked by the user"),
        ]
    )
    chat = await chat_factory(sender, calendar=open_now_calendar())
    await chat.handled(await chat.post(text="Привет"))
    lead_id = await chat.only_lead_id()
    started = asyncio.get_running_loop().time()
    resp = await chat.client.post(
        f"/v1/leads/{lead_id}/messages", json={"text": "Ответ"}, headers=ADMIN_AUTH
    )
    assert resp.status == 202
    lead = await chat.settled(lead_id)
    # The 429's retry_after was respected before the second try.
    assert asyncio.get_running_loop().time() - started >= 1.0
    reply = lead["messages"][-1]
    assert (reply["status"], reply["status_reason"]) == (
        "undeliverable",
        "Forbidden: bot was blocked by the user",
    )
    assert len(sender.sent) == 2
    items = await chat.store.outbox(OutboxState.CLOSED)
    assert [i.message_id for i in items] == [reply["id"]]
    assert await chat.store.outbox(OutboxState.DEAD) == []
    metrics = await (await chat.client.get("/metrics")).text()
    assert 'leadgate_messages_total{account="shop",channel="vk",result="undeliverable"} 1.0' in (
        metrics
    )
    assert 'leadgate_messages_total{account="shop",channel="vk",result="retry"} 1.0' in metrics


@pytest.mark.parametrize("idempotent", [False, True])
async def test_a_send_of_unknown_outcome_is_repeated_only_where_the_vendor_deduplicates(
    chat_factory: Callable[..., Awaitable[Chat]], idempotent: bool
) -> None:
    """No answer after the request went out (UNKNOWN), or the sender raised: a vendor with
    an idempotency key gets it again; any other ends `unconfirmed`, sent once, whoever
    wrote it."""
    sender = ScriptedSender(
        idempotent=idempotent,
        script=[
            SendResult(SendStatus.UNKNOWN, reason="ServerDisconnectedError"),
            RuntimeError("the sender broke mid-send"),
        ],
    )
    chat = await chat_factory(sender, calendar=open_now_calendar())
    await chat.handled(await chat.post(text="Привет"))
    lead_id = await chat.only_lead_id()
    for text in ("Первый", "Второй"):
        resp = await chat.client.post(
            f"/v1/leads/{lead_id}/messages", json={"text": text}, headers=ADMIN_AUTH
        )
        assert resp.status == 202
        await chat.settled(lead_id)
    lead = await chat.settled(lead_id)
    first, second = lead["messages"][-2:]
    metrics = await (await chat.client.get("/metrics")).text()
    if idempotent:
        assert (first["status"], second["status"]) == ("sent", "sent")
        # No answer, then the sender broke: tried again both times, the vendor keeps one.
        assert [m.text for m in sender.sent] == ["Первый", "Первый", "Первый", "Второй"]
        assert [m.attempted for m in sender.sent] == [False, True, True, False]
        assert 'result="unconfirmed"' not in metrics
        return
    assert (first["status"], second["status"]) == ("unconfirmed", "unconfirmed")
    assert "no answer after sending (ServerDisconnectedError)" in first["status_reason"]
    assert "the sender broke mid-send" in second["status_reason"]
    assert [m.text for m in sender.sent] == ["Первый", "Второй"]
    assert 'leadgate_messages_total{account="shop",channel="vk",result="unconfirmed"} 2.0' in (
        metrics
    )


async def test_refused_credentials_halt_the_account_until_a_probe_gets_through(
    chat_factory: Callable[..., Awaitable[Chat]],
) -> None:
    sender = ScriptedSender(script=[SendResult(SendStatus.HALT, reason="Unauthorized")])
    chat = await chat_factory(
        sender,
        calendar=open_now_calendar(),
        conversations={"halt_probe_seconds": 0.5, "backoff_initial_seconds": 0.05},
    )
    await chat.handled(await chat.post(text="Привет"))
    lead_id = await chat.only_lead_id()
    await chat.client.post(f"/v1/leads/{lead_id}/messages", json={"text": "1"}, headers=ADMIN_AUTH)
    await chat.sends(1)

    async def named() -> str | None:
        body = await (await chat.client.get("/readyz")).json()
        return next((p for p in body["problems"] if "vk/shop" in p), None)

    assert "credentials refused" in await named()
    lead = await chat.settled(lead_id)  # the probe sent it
    assert lead["messages"][-1]["status"] == "sent"
    assert len(sender.sent) == 2


async def test_messages_of_one_conversation_go_in_order(
    chat_factory: Callable[..., Awaitable[Chat]],
) -> None:
    sender = ScriptedSender(
        script=[SendResult(SendStatus.RETRY, reason="Internal", retry_after=0.3)]
    )
    chat = await chat_factory(sender, calendar=open_now_calendar())
    await chat.handled(await chat.post(text="Привет"))
    lead_id = await chat.only_lead_id()
    for n in range(3):
        resp = await chat.client.post(
            f"/v1/leads/{lead_id}/messages", json={"text": f"ответ {n}"}, headers=ADMIN_AUTH
        )
        assert resp.status == 202
    await chat.settled(lead_id)
    # The first one was retried; the later ones waited for it instead of overtaking it.
    assert [m.text for m in sender.sent] == ["ответ 0", "ответ 0", "ответ 1", "ответ 2"]


async def test_the_parts_of_a_long_reply_go_back_to_back_not_a_poll_apart(
    chat_factory: Callable[..., Awaitable[Chat]],
) -> None:
    """A reply split into parts (the CRM's long answer) is queued at once on one
    conversation; the store hands them out one at a time, and each next part goes as
    soon as the one before is sent — not after the worker's idle poll."""
    from gateway.keys import PIPELINE

    chat = await chat_factory(
        calendar=open_now_calendar(),
        conversations={"poll_seconds": 60, "backoff_initial_seconds": 0.05},
    )
    await chat.handled(await chat.post(text="Расскажите подробно"))
    lead_id = await chat.only_lead_id()
    (conversation,) = (await chat.lead(lead_id))["conversations"]
    now = datetime.now(UTC)
    for part in ("часть 1", "часть 2", "часть 3"):
        await chat.store.queue_message(
            lead_id, part, author="crm:7", now=now, conversation_id=conversation["id"]
        )
    started = asyncio.get_running_loop().time()
    chat.client.app[PIPELINE].chats.queued()
    await chat.sends(3)
    assert asyncio.get_running_loop().time() - started < 5
    assert [m.text for m in chat.sender.sent] == ["часть 1", "часть 2", "часть 3"]


async def test_an_unreadable_update_is_kept_dead_not_dropped(
    chat_factory: Callable[..., Awaitable[Chat]],
) -> None:
    chat = await chat_factory()
    resp = await chat.client.post(
        "/v1/testchat/shop", json={"update_id": 99}, headers={"X-Secret": SECRET}
    )
    assert resp.status == 200

    async def dead() -> list[Any]:
        return await chat.store.list_inbox()

    async def is_dead() -> bool:
        items = await dead()
        return bool(items) and items[0].state.value == "dead"

    await eventually(is_dead)
    item = (await dead())[0]
    assert item.last_error == "unprocessable: no chat"
    assert item.body  # kept for a person to look at
    body = await (await chat.client.get("/readyz")).json()
    assert any("could not be handled" in p for p in body["problems"])


async def test_the_lead_with_its_transcript_matches_the_openapi_document(
    chat_factory: Callable[..., Awaitable[Chat]],
) -> None:
    check = openapi_check
    chat = await chat_factory()
    await chat.handled(await chat.post(text="Здравствуйте", lang="ru"))
    lead_id = await chat.only_lead_id()
    resp = await chat.client.post(
        f"/v1/leads/{lead_id}/messages", json={"text": "Добрый день"}, headers=ADMIN_AUTH
    )
    check("ReplyQueued", await resp.json())
    check("ReplyRequest", {"text": "Добрый день"})
    lead = await chat.settled(lead_id)
    assert len(lead["messages"]) == 3
    check("LeadDetail", lead)
