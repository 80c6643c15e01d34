"""The widget's chat over its WebSocket: a conversation per visitor token, acks and
replays, seller replies pushed within a second (also across replicas through the
broadcast seam), resume with history, limits with visible messages, prechat merges."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from conftest import ADMIN_AUTH
from widget_support import (
    ORIGIN,
    Clock,
    msk,
    settings_with_widget,
    specs_with_clock,
    widget_config,
)

from gateway.broadcast import InProcessBroadcast
from gateway.keys import PIPELINE, SUPERVISOR
from gateway.store.base import StoreUnavailable
from gateway.web import create_app, make_store

Client = TestClient[Any, Any]
WS = aiohttp.ClientWebSocketResponse
FROM_SITE = {"Origin": ORIGIN}
MONDAY_NOON = msk(2026, 1, 12, 12, 0)


def token() -> str:
    return secrets.token_urlsafe(24)


async def _client(
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    clock: Clock,
    widget: dict[str, Any] | None = None,
    broadcast: InProcessBroadcast | None = None,
    **settings: Any,
) -> Client:
    app = create_app(
        settings_with_widget(tmp_path, widget, **settings),
        specs=specs_with_clock(clock),
        broadcast=broadcast,
    )
    client: Client = await aiohttp_client(app)
    return client


async def _open(client: Client, visitor: str) -> tuple[WS, dict[str, Any]]:
    ws = await client.ws_connect("/v1/widget/site/ws", headers=FROM_SITE)
    await ws.send_json({"type": "hello", "token": visitor})
    welcome = await ws.receive_json(timeout=5)
    assert welcome["type"] == "welcome"
    return ws, welcome


async def _say(ws: WS, text: str, client_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """A visitor's message; with the consent the first one of a conversation needs, as the
    widget sends it after its consent box (tests/connectors/test_widget_consent.py)."""
    extra.setdefault("contact", {"consent": True})
    await ws.send_json(
        {"type": "message", "client_id": client_id or secrets.token_hex(8), "text": text, **extra}
    )
    answer: dict[str, Any] = await ws.receive_json(timeout=5)
    return answer


async def _next(ws: WS, kind: str = "message") -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = await ws.receive_json(timeout=5)
        if frame["type"] == kind:
            return frame


async def _lead(client: Client, lead_id: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/leads/{lead_id}", headers=ADMIN_AUTH)
    assert resp.status == 200
    lead: dict[str, Any] = await resp.json()
    return lead


async def _chat_leads(client: Client) -> list[dict[str, Any]]:
    resp = await client.get("/v1/leads", params={"channel": "chat"}, headers=ADMIN_AUTH)
    leads: list[dict[str, Any]] = (await resp.json())["leads"]
    return leads


async def test_socket_refuses_other_sites_before_the_upgrade(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, Clock(MONDAY_NOON))
    for headers in ({}, {"Origin": "https://evil.example"}):
        resp = await client.get(
            "/v1/widget/site/ws",
            headers=headers | {"Upgrade": "websocket", "Connection": "Upgrade"},
        )
        assert resp.status == 403
        assert (await resp.json())["error"] == "origin_not_allowed"


async def test_hello_comes_first_and_the_token_is_checked(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, Clock(MONDAY_NOON))
    ws = await client.ws_connect("/v1/widget/site/ws", headers=FROM_SITE)
    await ws.send_json({"type": "message", "client_id": "abcdefgh", "text": "hi"})
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1008
    ws = await client.ws_connect("/v1/widget/site/ws", headers=FROM_SITE)
    await ws.send_json({"type": "hello", "token": "short"})
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1008


async def test_a_message_becomes_a_chat_lead_and_a_repeat_is_a_replay(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, Clock(MONDAY_NOON))
    visitor = token()
    ws, welcome = await _open(client, visitor)
    assert welcome["messages"] == []
    ack = await _say(ws, "Здравствуйте, есть подъёмник на 4 т?", client_id="c1-aaaaaaaa")
    assert ack["type"] == "ack" and ack["client_id"] == "c1-aaaaaaaa"
    assert ack["message"]["author"] == "customer"
    again = await _say(ws, "Здравствуйте, есть подъёмник на 4 т?", client_id="c1-aaaaaaaa")
    assert again["message"]["id"] == ack["message"]["id"]  # the same message, not a second
    (lead,) = await _chat_leads(client)
    assert lead["source_id"] == "WEB"
    full = await _lead(client, lead["id"])
    assert len(full["events"]) == 1
    event = full["events"][0]
    assert event["source_detail"] == "widget:site"
    assert event["thread"]["account"] == "site"
    assert event["thread"]["chat"] != visitor  # only a hash of the browser's token is kept
    assert [m["text"] for m in full["messages"]] == ["Здравствуйте, есть подъёмник на 4 т?"]


async def test_seller_reply_reaches_the_socket_within_a_second_and_history_resumes(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, Clock(MONDAY_NOON))
    visitor = token()
    ws, _ = await _open(client, visitor)
    ack = await _say(ws, "Сколько стоит доставка?")
    (lead,) = await _chat_leads(client)
    started = time.monotonic()
    resp = await client.post(
        f"/v1/leads/{lead['id']}/messages",
        json={"text": "Доставка по Москве бесплатно."},
        headers=ADMIN_AUTH,
    )
    assert resp.status == 202, await resp.text()
    pushed = await _next(ws)
    assert time.monotonic() - started < 1.0
    assert pushed["message"]["author"] == "seller"
    assert pushed["message"]["text"] == "Доставка по Москве бесплатно."
    await ws.close()

    # A reload: the same token, the same conversation, its history.
    _, welcome = await _open(client, visitor)
    assert [(m["author"], m["text"]) for m in welcome["messages"]] == [
        ("customer", "Сколько стоит доставка?"),
        ("seller", "Доставка по Москве бесплатно."),
    ]
    assert welcome["messages"][0]["client_id"] == ack["client_id"]
    # Another visitor sees nothing of it.
    _, stranger = await _open(client, token())
    assert stranger["messages"] == []


async def test_other_tabs_of_the_visitor_see_each_message(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, Clock(MONDAY_NOON))
    visitor = token()
    first, _ = await _open(client, visitor)
    second, _ = await _open(client, visitor)
    await _say(first, "Пишу из первой вкладки")
    seen = await _next(second)
    assert seen["message"]["text"] == "Пишу из первой вкладки"


class _SharedStore:
    """One store for two apps in one process (replicas share their store): opened by the
    first, closed by the last."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._users = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def open(self) -> None:
        if self._users == 0:
            await self._store.open()
        self._users += 1

    async def close(self) -> None:
        self._users -= 1
        if self._users == 0:
            await self._store.close()


async def test_a_reply_made_on_another_replica_reaches_the_socket(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    # Two gateways on one store and one broadcast. A holds the visitor's socket and runs no
    # workers; B's message worker sends the seller's reply, its sender broadcasts it, and
    # A pushes it to the socket.
    settings = settings_with_widget(tmp_path)
    store = _SharedStore(make_store(settings))
    shared = InProcessBroadcast()
    clock = Clock(MONDAY_NOON)
    apps = [
        create_app(settings, store=store, broadcast=shared, specs=specs_with_clock(clock))
        for _ in range(2)
    ]
    a: Client = await aiohttp_client(apps[0])
    b: Client = await aiohttp_client(apps[1])
    await apps[0][SUPERVISOR].stop()  # A only serves sockets
    ws, _ = await _open(a, token())
    await _say(ws, "Вопрос на реплику A")
    (lead,) = await _chat_leads(b)
    resp = await b.post(
        f"/v1/leads/{lead['id']}/messages", json={"text": "Ответ с B"}, headers=ADMIN_AUTH
    )
    assert resp.status == 202
    assert (await _next(ws))["message"]["text"] == "Ответ с B"
    for _ in range(100):  # the worker records "sent" just after the send returned
        full = await _lead(b, lead["id"])
        if full["messages"][-1]["status"] == "sent":
            break
        await asyncio.sleep(0.05)
    assert [m["status"] for m in full["messages"]] == ["received", "sent"]


async def test_prechat_phone_joins_the_visitors_other_lead(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, Clock(MONDAY_NOON))
    form = await client.post("/v1/forms/site", json={"name": "Анна", "phone": "+79161234567"})
    form_lead = (await form.json())["lead_id"]
    ws, _ = await _open(client, token())
    contact = {"name": "Анна", "phone": "+7 (916) 123-45-67", "consent": True}
    await _say(ws, "Я оставляла заявку утром", contact=contact)
    assert await _chat_leads(client) == []  # no lead of its own: it joined the form's
    full = await _lead(client, form_lead)
    chat = full["events"][-1]
    assert chat["channel"] == "chat" and chat["matched_on"] == "phone"
    assert chat["meta"]["consent"]["policy_url"].endswith("/privacy")


async def test_phone_and_email_typed_in_the_chat_become_the_contact(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, Clock(MONDAY_NOON))
    ws, _ = await _open(client, token())
    await _say(ws, "Здравствуйте")
    await _say(ws, "Мой номер 8 916 765-43-21, почта Ivan@Example.ru")
    (lead,) = await _chat_leads(client)
    assert lead["contact"]["phones"] == ["+79167654321"]
    assert lead["contact"]["emails"] == ["ivan@example.ru"]
    # So a later request of the same person joins this chat's lead.
    callback = {"phone": "89167654321", "consent": True}
    resp = await client.post("/v1/widget/site/callback", json=callback, headers=FROM_SITE)
    assert resp.status == 201
    full = await _lead(client, lead["id"])
    assert [(e["channel"], e["matched_on"]) for e in full["events"]][-1] == ("callback", "phone")


async def test_message_limits_answer_with_a_visible_message(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    widget = widget_config(limits={"messages_per_visitor": 2, "max_message_chars": 20})
    client = await _client(aiohttp_client, tmp_path, Clock(MONDAY_NOON), widget)
    ws, _ = await _open(client, token())
    too_long = await _say(ws, "x" * 21, client_id="long-aaaaaa")
    assert too_long == {
        "type": "error",
        "code": "too_long",
        "detail": "Сообщение слишком длинное: не больше 20 символов",
        "client_id": "long-aaaaaa",
    }
    assert (await _say(ws, "раз"))["type"] == "ack"
    assert (await _say(ws, "два"))["type"] == "ack"
    limited = await _say(ws, "три", client_id="third-aaaa")
    assert limited["code"] == "rate_limited"
    assert limited["retry_after"] == 30
    assert limited["detail"] == "Слишком много сообщений. Подождите 30 с и отправьте снова."


async def test_new_chats_are_limited_per_address(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    widget = widget_config(limits={"conversations_per_ip": 1})
    client = await _client(aiohttp_client, tmp_path, Clock(MONDAY_NOON), widget)
    first, _ = await _open(client, token())
    assert (await _say(first, "первый"))["type"] == "ack"
    assert (await _say(first, "и ещё"))["type"] == "ack"  # the same chat goes on
    second, _ = await _open(client, token())
    refused = await _say(second, "второй чат")
    assert refused["code"] == "rate_limited"
    assert refused["detail"].startswith("Слишком много новых чатов с вашего адреса")


async def test_sockets_per_address_are_limited(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    widget = widget_config(limits={"sockets_per_ip": 2})
    client = await _client(aiohttp_client, tmp_path, Clock(MONDAY_NOON), widget)
    await _open(client, token())
    await _open(client, token())
    resp = await client.get(
        "/v1/widget/site/ws",
        headers=FROM_SITE | {"Upgrade": "websocket", "Connection": "Upgrade"},
    )
    assert resp.status == 429


async def test_closed_chat_takes_no_new_conversation_but_an_open_one_goes_on(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    clock = Clock(msk(2026, 1, 12, 18, 59))
    client = await _client(aiohttp_client, tmp_path, clock)
    visitor = token()
    ws, _ = await _open(client, visitor)
    assert (await _say(ws, "Успею до семи?"))["type"] == "ack"
    clock.set(msk(2026, 1, 12, 19, 30))
    # The visitor who was chatting may go on; the core answers after hours, once.
    assert (await _say(ws, "Ещё вопрос"))["type"] == "ack"
    auto = await _next(ws)
    assert auto["message"]["author"] == "auto"
    assert auto["message"]["text"] == (
        "Здравствуйте! Спасибо за сообщение. Сейчас у нас нерабочее время — менеджер "
        "ответит вам во вторник, 13 января, после 10:00."
    )
    # Answered once per closed period: the next message gets no second answer.
    assert (await _say(ws, "И ещё одно"))["type"] == "ack"
    (lead,) = await _chat_leads(client)
    full = await _lead(client, lead["id"])
    assert [m["author"] for m in full["messages"]] == ["customer", "customer", "auto", "customer"]
    newcomer, _ = await _open(client, token())
    closed = await _say(newcomer, "Есть кто?", client_id="late-aaaaa")
    assert closed["code"] == "chat_closed"
    assert closed["detail"] == "Чат сейчас закрыт. Оставьте заявку — мы свяжемся с вами."
    assert "retry_after" not in closed


async def test_garbage_frames_close_the_socket(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, Clock(MONDAY_NOON))
    ws, _ = await _open(client, token())
    await ws.send_json({"type": "ping"})
    assert (await ws.receive_json(timeout=5)) == {"type": "pong"}
    for _ in range(5):
        await ws.send_str("{not json")
    while True:
        msg = await ws.receive(timeout=5)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            break
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1008
    await asyncio.sleep(0)


async def test_a_message_the_store_could_not_keep_is_not_acknowledged(
    aiohttp_client: Callable[..., Any], tmp_path: Path, monkeypatch: Any
) -> None:
    client = await _client(aiohttp_client, tmp_path, Clock(MONDAY_NOON))
    pipeline = client.server.app[PIPELINE]
    real = pipeline.accept

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("disk full")

    monkeypatch.setattr(pipeline, "accept", down)
    ws, _ = await _open(client, token())
    refused = await _say(ws, "Алло?", client_id="again-aaaa")
    assert refused == {
        "type": "error",
        "code": "unavailable",
        "detail": "Не получилось отправить. Попробуйте ещё раз.",
        "client_id": "again-aaaa",
        "retry_after": 5,
    }
    monkeypatch.setattr(pipeline, "accept", real)
    assert (await _say(ws, "Алло?", client_id="again-aaaa"))["type"] == "ack"
    assert len(await _chat_leads(client)) == 1
