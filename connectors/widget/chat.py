"""The widget's chat: a WebSocket per open page, a conversation per visitor.

GET /v1/widget/NAME/ws (Origin checked against the widget's allowed origins). Frames are
JSON text, at most MAX_FRAME bytes:

  browser -> gateway                              gateway -> browser
  {"type": "hello", "token": T}                   {"type": "welcome", "messages": [...]}
  {"type": "message", "client_id": C,             {"type": "ack", "client_id": C, "message": M}
   "text": "...", "contact": {...}?}              {"type": "message", "message": M}

The first message of a conversation must carry "contact": {"consent": true, ...} (the
visitor ticked the consent box, 152-ФЗ); without it the answer is the error
"consent_required" and nothing is stored.
  {"type": "ping"}                                {"type": "pong"}
                                                  {"type": "error", "code", "detail",
                                                   "client_id"?, "retry_after"?}

The visitor is the random token the browser keeps (localStorage); the gateway knows only
its hash, the visitor id, which is the conversation's chat: ThreadRef(account=widget name,
chat=visitor id). A reload, a second tab, a phone waking up: the same token, the same
conversation, its history in `welcome`. Messages the browser sent but saw no `ack` for are
sent again with the same client id; the event's external id is made of it, so a repeat
is a replay, never a second message.

A seller's reply (POST /v1/leads/{id}/messages) is queued by the core and handed by the
message worker — on whichever replica claimed it — to `WidgetSender`, which broadcasts it
(gateway.broadcast) on the visitor's topic; every replica holding a socket of that
visitor pushes it. The store keeps the line, so a visitor with no socket open reads it in
the next `welcome`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from connectors.widget.guard import allowed_origin, ip_bucket, retry_seconds, visitor_locale
from connectors.widget.schedule import widget_state
from connectors.widget.settings import Tab, WidgetSettings
from connectors.widget.texts import (
    MSG_CHAT_CLOSED,
    MSG_CONSENT,
    MSG_FAILED,
    MSG_TOO_LONG,
    MSG_TOO_MANY_CHATS,
    MSG_TOO_MANY_MESSAGES,
)
from gateway.broadcast import RESYNC
from gateway.channels import ConnectorContext
from gateway.conversations import (
    AUTO,
    ChatMessage,
    Direction,
    OutboundMessage,
    SendResult,
    SendStatus,
)
from gateway.errors import ApiError
from gateway.http import client_ip
from gateway.i18n import gettext_for
from gateway.identity import find_phones, normalize_email, normalize_phone
from gateway.models import Channel, Contact, LeadEvent, ThreadRef
from gateway.store.base import StoreUnavailable

log = logging.getLogger(__name__)

MAX_FRAME = 16 * 1024
HELLO_SECONDS = 10.0
HISTORY = 200  # lines a welcome carries at most
# With a shared broadcast a notice can be lost (a Redis reconnect): each socket also
# re-reads its conversation this often. In one process nothing can be lost.
RESYNC_SECONDS = 60.0
# A socket sending garbage is closed after this many bad frames.
MAX_BAD_FRAMES = 5
VISITOR_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,64}$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_EMAIL = re.compile(r"[^\s@<>(),;:\"']+@[^\s@<>(),;:\"']+\.[^\s@<>(),;:\"'.]+")

Clock = Callable[[], datetime]


def visitor_id(token: str) -> str:
    """The visitor as the gateway knows them: a hash of their browser's token, so neither
    the store nor the CRM holds what would let someone else resume their chat."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def topic(widget: str, visitor: str) -> str:
    return f"widget:{widget}:{visitor}"


def conversation_memo(widget: str, visitor: str) -> str:
    """The durable memo (a pipeline checkpoint) naming the lead the visitor's conversation
    last joined: how a reconnecting socket finds the history."""
    return f"widget.chat:{widget}:{visitor}"


def line_json(message: ChatMessage, client_id: str | None = None) -> dict[str, Any]:
    """A transcript line as the browser sees it: no seller ids, no lead ids."""
    if message.direction is Direction.IN:
        author = "customer"
    else:
        author = "auto" if message.author == AUTO else "seller"
    out: dict[str, Any] = {
        "id": message.id,
        "author": author,
        "text": message.text or "",
        "at": message.at.isoformat(),
    }
    if client_id is None and message.direction is Direction.IN and message.external_id:
        # The browser's own id for it, so a page that sent it and saw no ack drops its copy.
        client_id = message.external_id.rsplit(":", 1)[-1]
    if client_id is not None:
        out["client_id"] = client_id
    return out


@dataclass(eq=False)
class Session:
    """One open socket."""

    ws: web.WebSocketResponse
    widget_name: str
    visitor: str
    ip: str
    locale: str
    seen: set[str] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pushes: list[bytes] = field(default_factory=list)

    def hear(self, message: bytes) -> None:
        """A broadcast on this visitor's topic (called on the event loop)."""
        self.pushes.append(message)
        self.wake.set()


class WidgetChat:
    """The chat routes, the sockets this process holds, and the chat channel's sender."""

    def __init__(
        self, ctx: ConnectorContext, widgets: Mapping[str, WidgetSettings], clock: Clock
    ) -> None:
        self.ctx = ctx
        self.widgets = dict(widgets)
        self.clock = clock
        self.trusted = list(ctx.trusted_proxies)
        self.region = ctx.settings.phone_region
        self.sockets_per_ip: dict[str, int] = {}
        self.sessions: set[Session] = set()

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        name = "{name:[a-z0-9][a-z0-9_-]{0,39}}"
        return [web.get(f"/v1/widget/{name}/ws", self.handle)]

    async def shutdown(self) -> None:
        for session in list(self.sessions):
            with contextlib.suppress(Exception):
                await session.ws.close(code=1001, message=b"server shutdown")

    # --- the socket ---------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        widget = self.widgets.get(name)
        if widget is None:
            raise ApiError(404, "unknown_widget", f"no widget named {name!r} is configured")
        allowed_origin(request, widget)  # before the upgrade: a 403 the browser can see
        if Tab.CHAT not in widget.tabs:
            raise ApiError(404, "tab_not_enabled", "this widget has no chat")
        ip = ip_bucket(client_ip(request, self.trusted))
        if self.sockets_per_ip.get(ip, 0) >= widget.limits.sockets_per_ip:
            raise ApiError(429, "too_many_sockets", "too many open chats from this address")
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_FRAME)
        await ws.prepare(request)
        self.sockets_per_ip[ip] = self.sockets_per_ip.get(ip, 0) + 1
        try:
            await self._serve(ws, name, widget, ip, visitor_locale(request.query, request))
        finally:
            left = self.sockets_per_ip.get(ip, 1) - 1
            if left:
                self.sockets_per_ip[ip] = left
            else:
                self.sockets_per_ip.pop(ip, None)
        return ws

    async def _serve(
        self, ws: web.WebSocketResponse, name: str, widget: WidgetSettings, ip: str, locale: str
    ) -> None:
        try:
            first = await ws.receive(timeout=HELLO_SECONDS)
        except TimeoutError:
            await ws.close(code=1008, message=b"hello expected")
            return
        hello = _frame(first)
        token = hello.get("token") if hello else None
        if not hello or hello.get("type") != "hello" or not isinstance(token, str):
            await ws.close(code=1008, message=b"hello expected")
            return
        if not VISITOR_TOKEN.fullmatch(token):
            await ws.close(code=1008, message=b"bad token")
            return
        session = Session(ws, name, visitor_id(token), ip, locale)
        unsubscribe = self.ctx.broadcast.subscribe(topic(name, session.visitor), session.hear)
        self.sessions.add(session)
        pusher = asyncio.create_task(self._push(session))
        try:
            history = await self._history(session)
            session.seen.update(m["id"] for m in history)
            await ws.send_str(_json({"type": "welcome", "messages": history}))
            await self._read(session, widget)
        finally:
            unsubscribe()
            self.sessions.discard(session)
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pusher

    async def _read(self, session: Session, widget: WidgetSettings) -> None:
        ws = session.ws
        bad = 0
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                # Binary frames, errors: nothing the widget sends.
                bad += 1
                if bad >= MAX_BAD_FRAMES or msg.type is WSMsgType.ERROR:
                    break
                continue
            frame = _frame(msg)
            kind = frame.get("type") if frame else None
            if kind == "ping":
                await ws.send_str('{"type":"pong"}')
            elif kind == "message" and frame is not None:
                await self._message(session, widget, frame)
            else:
                bad += 1
                await self._error(session, "bad_frame", "unknown frame")
                if bad >= MAX_BAD_FRAMES:
                    break
        if not ws.closed:
            await ws.close(code=1008, message=b"too many bad frames")

    async def _push(self, session: Session) -> None:
        """Broadcasts for this visitor -> the socket; a periodic re-read where notices
        can be lost (a shared broadcast)."""
        resync = RESYNC_SECONDS if self.ctx.broadcast.shared else None
        while not session.ws.closed:
            try:
                await asyncio.wait_for(session.wake.wait(), timeout=resync)
            except TimeoutError:
                session.pushes.append(RESYNC)
            session.wake.clear()
            pushes, session.pushes = session.pushes, []
            for raw in pushes:
                if raw == RESYNC:
                    await self._resync(session)
                    continue
                line = orjson.loads(raw)
                if line["id"] in session.seen:
                    continue
                session.seen.add(line["id"])
                with contextlib.suppress(ConnectionResetError):
                    await session.ws.send_str(_json({"type": "message", "message": line}))

    async def _resync(self, session: Session) -> None:
        for line in await self._history(session):
            if line["id"] not in session.seen:
                session.seen.add(line["id"])
                with contextlib.suppress(ConnectionResetError):
                    await session.ws.send_str(_json({"type": "message", "message": line}))

    async def _history(self, session: Session) -> list[dict[str, Any]]:
        """The visitor's conversation as the browser shows it: this widget's thread only
        (the lead may hold the same person's other chats), the last HISTORY lines."""
        pipeline = self.ctx.pipeline
        lead_id = await pipeline.get_checkpoint(
            conversation_memo(session.widget_name, session.visitor)
        )
        if lead_id is None:
            return []
        transcript = await pipeline.transcript(lead_id)
        mine = {
            c.id
            for c in transcript.conversations
            if c.channel is Channel.CHAT
            and c.account == session.widget_name
            and c.chat == session.visitor
        }
        lines = [line_json(m) for m in transcript.messages if m.conversation_id in mine]
        return lines[-HISTORY:]

    # --- a visitor's message --------------------------------------------------------------

    async def _message(
        self, session: Session, widget: WidgetSettings, frame: dict[str, Any]
    ) -> None:
        _ = gettext_for(session.locale)
        client_id = frame.get("client_id")
        text = frame.get("text")
        if not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
            await self._error(session, "bad_frame", "client_id: 8-64 of A-Z a-z 0-9 _ -")
            return
        if not isinstance(text, str) or not text.strip():
            await self._error(session, "empty", "empty message", client_id)
            return
        limit = widget.limits.max_message_chars
        if len(text) > limit:
            await self._error(session, "too_long", _(MSG_TOO_LONG).format(limit=limit), client_id)
            return
        memo = conversation_memo(session.widget_name, session.visitor)
        known_lead = await self.ctx.pipeline.get_checkpoint(memo)
        now = self.clock()
        limits = widget.limits
        coordination = self.ctx.coordination
        given = frame.get("contact")
        if known_lead is None and not (isinstance(given, dict) and given.get("consent") is True):
            # 152-ФЗ: a conversation starts with the visitor's consent, as the form does.
            # Checked first, whatever the limits say: without it nothing is stored, and
            # "consent needed" is the one answer the visitor can act on.
            await self._error(session, "consent_required", _(MSG_CONSENT), client_id)
            return
        if known_lead is None:
            # A new conversation: only while the chat is open, and so many per address.
            state = widget_state(self.ctx.pipeline, widget, now).tab(Tab.CHAT)
            if state is None or not state.shown:
                await self._error(session, "chat_closed", _(MSG_CHAT_CLOSED), client_id)
                return
            wait = await coordination.take(
                f"widget-chats:{session.widget_name}:{session.ip}",
                capacity=float(limits.conversations_per_ip),
                rate=limits.conversations_per_ip / limits.conversations_window_seconds,
            )
            if wait:
                seconds = retry_seconds(wait)
                detail = _(MSG_TOO_MANY_CHATS).format(seconds=seconds)
                await self._error(session, "rate_limited", detail, client_id, seconds)
                return
        for bucket, allowed in (
            (f"widget-msg:{session.widget_name}:{session.visitor}", limits.messages_per_visitor),
            (f"widget-msg-ip:{session.widget_name}:{session.ip}", limits.messages_per_ip),
        ):
            wait = await coordination.take(
                bucket, capacity=float(allowed), rate=allowed / limits.messages_window_seconds
            )
            if wait:
                seconds = retry_seconds(wait)
                detail = _(MSG_TOO_MANY_MESSAGES).format(seconds=seconds)
                await self._error(session, "rate_limited", detail, client_id, seconds)
                return
        event = self._event(session, widget, client_id, text, frame.get("contact"), now)
        try:
            receipt = await self.ctx.pipeline.accept(event)
        except StoreUnavailable:
            # Not stored, so not acknowledged: the page keeps it and sends it again.
            log.exception("widget %s: chat message not stored", session.widget_name)
            await self._error(session, "unavailable", _(MSG_FAILED), client_id, 5)
            return
        if receipt.lead_id is not None and receipt.lead_id != known_lead:
            await self.ctx.pipeline.save_checkpoint(memo, receipt.lead_id)
        line = {
            "id": receipt.event_id,
            "client_id": client_id,
            "author": "customer",
            "text": text,
            "at": now.isoformat(),
        }
        session.seen.add(receipt.event_id)
        await session.ws.send_str(_json({"type": "ack", "client_id": client_id, "message": line}))
        # The visitor's other tabs (on any replica) show it too.
        await self.ctx.broadcast.publish(
            topic(session.widget_name, session.visitor), orjson.dumps(line)
        )

    def _event(
        self,
        session: Session,
        widget: WidgetSettings,
        client_id: str,
        text: str,
        contact: Any,
        now: datetime,
    ) -> LeadEvent:
        """A chat message -> LeadEvent. Phones and emails in the prechat fields or typed in
        the text become the contact, so the visitor joins their other leads."""
        given = contact if isinstance(contact, dict) else {}
        name = given.get("name") if isinstance(given.get("name"), str) else None
        phones: list[str] = []
        emails: list[str] = []
        raw_phone, raw_email = given.get("phone"), given.get("email")
        if isinstance(raw_phone, str) and (p := normalize_phone(raw_phone[:40], self.region)):
            phones.append(p)
        if isinstance(raw_email, str) and (e := normalize_email(raw_email[:320])):
            emails.append(e)
        phones += [p for p in find_phones(text, self.region) if p not in phones]
        emails += [e for m in _EMAIL.findall(text) if (e := normalize_email(m)) and e not in emails]
        meta: dict[str, Any] = {"kind": "message", "widget": session.widget_name}
        if given:
            meta["prechat"] = {k: str(v)[:320] for k, v in given.items() if k != "consent"}
            if given.get("consent") is True:
                meta["consent"] = {
                    "given_at": now.isoformat(),
                    "policy_url": widget.policy_url,
                    "policy_version": widget.policy_version,
                    "locale": session.locale,
                    "widget": session.widget_name,
                }
        return LeadEvent(
            channel=Channel.CHAT,
            external_id=f"{session.widget_name}:{session.visitor}:{client_id}",
            occurred_at=now,
            received_at=now,
            contact=Contact(
                name=name.strip()[:200] or None if name else None,
                phones=tuple(phones[:5]),
                emails=tuple(emails[:5]),
                handles=(f"web:{session.visitor}",),
            ),
            text=text,
            source_detail=f"widget:{session.widget_name}",
            meta=meta,
            thread=ThreadRef(
                account=session.widget_name, chat=session.visitor, locale=session.locale
            ),
        )

    async def _error(
        self,
        session: Session,
        code: str,
        detail: str,
        client_id: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        body: dict[str, Any] = {"type": "error", "code": code, "detail": detail}
        if client_id is not None:
            body["client_id"] = client_id
        if retry_after is not None:
            body["retry_after"] = retry_after
        self.ctx.metrics.rejected("/v1/widget/{name}/ws", code)
        with contextlib.suppress(ConnectionResetError):
            await session.ws.send_str(_json(body))


class WidgetSender:
    """The chat channel's MessageSender: a queued reply is already in the store; sending is
    telling the replicas that hold the visitor's sockets (gateway.broadcast)."""

    # The seller's reply is shown whole; the widget's visitors write at most
    # [widget.NAME.limits] max_message_chars, sellers may write more.
    max_text = 4096
    # A repeated broadcast shows nothing twice: the browser keys lines by id.
    idempotent = True

    def __init__(self, ctx: ConnectorContext, widgets: Mapping[str, WidgetSettings], clock: Clock):
        self.ctx = ctx
        self.widgets = widgets
        self.clock = clock

    async def send(self, out: OutboundMessage) -> SendResult:
        if out.account not in self.widgets:
            return SendResult(SendStatus.UNDELIVERABLE, reason="виджет удалён из настроек")
        line = {
            "id": out.message_id,
            "author": "auto" if out.author == AUTO else "seller",
            "text": out.text,
            "at": self.clock().isoformat(),
        }
        await self.ctx.broadcast.publish(topic(out.account, out.chat), orjson.dumps(line))
        return SendResult(SendStatus.SENT, external_id=out.message_id)


def _json(body: Any) -> str:
    # Text frames: a browser hands binary ones to the page as a Blob.
    return orjson.dumps(body).decode()


def _frame(msg: Any) -> dict[str, Any] | None:
    if msg.type is not WSMsgType.TEXT:
        return None
    try:
        data = orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None
