"""A tiny chat connector for testing the conversation core without any vendor: it plugs in
exactly the way a real chat connector does (gateway/channels.py, docs/development.md).

Its "vendor" posts JSON updates to POST /v1/testchat/{account} with the header X-Secret:
    {"update_id": 7, "chat": "42", "message_id": 3, "text": "...", "lang": "ru",
     "date": 1767945600, "edit_of": 2, "start": true, "phone": "+7916..."}
The route stores the update in the inbox (key: update_id, thread: chat) and answers 200;
`fail_once` names updates whose first handling fails (a passing failure); the inbox
handler turns it into a LeadEvent on channel `vk` (the test borrows a chat channel of the
LeadEvent contract). The sender records what it was asked to send and answers what the
test scripted.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from aiohttp import web

from gateway.channels import ChannelDefaults, ChannelSpec, ConnectorContext, TaskSpec
from gateway.chats import ChatAccount
from gateway.conversations import OutboundMessage, SendResult, SendStatus
from gateway.errors import ApiError
from gateway.http import parse_json_object
from gateway.inbox import InboxEntry, InboxItem, Unprocessable
from gateway.models import AutoAnswer, Channel, Contact, LeadEvent, ThreadRef

SECRET = "test-chat-secret"
CHANNEL = Channel.VK
INBOX = "testchat"


@dataclass
class ScriptedSender:
    """Answers the results queued in `script` (then SENT), and remembers every send."""

    max_text: int = 100
    idempotent: bool = False
    sent: list[OutboundMessage] = field(default_factory=list)
    script: list[SendResult | Exception] = field(default_factory=list)
    counter: int = 0

    async def send(self, message: OutboundMessage) -> SendResult:
        self.sent.append(message)
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            return step
        self.counter += 1
        return SendResult(SendStatus.SENT, external_id=f"out-{self.counter}")


class ChatTestConnector:
    name = "testchat"

    def __init__(self, ctx: ConnectorContext, sender: ScriptedSender) -> None:
        self.ctx = ctx
        self.sender = sender
        self.handled: list[int] = []
        self.fail_once: set[int] = set()  # update ids whose next handling fails
        ctx.inbox.register(INBOX, self.handle)
        ctx.chats.register_sender(CHANNEL, sender)
        ctx.chats.register_account(CHANNEL, "quiet", ChatAccount(after_hours_answer=False))

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        return [web.post("/v1/testchat/{account}", self.webhook)]

    def tasks(self) -> Sequence[TaskSpec]:
        return []

    def readiness(self) -> str | None:
        return None

    async def shutdown(self) -> None:
        return None

    async def webhook(self, request: web.Request) -> web.Response:
        given = request.headers.get("X-Secret", "").encode()
        if not hmac.compare_digest(given, SECRET.encode()):
            raise ApiError(401, "unauthorized", "wrong secret")
        body = await request.read()
        update = parse_json_object(body)
        key = update.get("update_id")
        if not isinstance(key, int):
            raise ApiError(400, "invalid_update", "no update_id")
        chat = update.get("chat")
        entry = InboxEntry(
            INBOX,
            request.match_info["account"],
            str(key),
            body,
            thread=str(chat) if chat is not None else None,
        )
        await self.ctx.inbox.put([entry])
        return web.json_response({})

    async def handle(self, item: InboxItem) -> None:
        update = orjson.loads(item.body)
        if update.get("update_id") in self.fail_once:
            self.fail_once.discard(update["update_id"])
            raise RuntimeError("the store hiccuped")
        if "chat" not in update:
            raise Unprocessable("no chat")
        chat = str(update["chat"])
        edit_of = update.get("edit_of")
        external = f"{item.account}:{chat}:{update['message_id']}"
        occurred = (
            datetime.fromtimestamp(update.get("date", 0), UTC)
            if "date" in update
            else (datetime.now(UTC))
        )
        answer = AutoAnswer(text="Здравствуйте!", ask_phone=True) if update.get("start") else None
        event = LeadEvent(
            channel=CHANNEL,
            external_id=external + (f":edit:{update['update_id']}" if edit_of else ""),
            occurred_at=occurred,
            received_at=datetime.now(UTC),
            contact=Contact(
                name=update.get("name"),
                handles=(f"vk:{chat}",),
                phones=(update["phone"],) if update.get("phone") else (),
            ),
            text=update.get("text"),
            thread=ThreadRef(account=item.account, chat=chat, locale=update.get("lang")),
            edits=f"{item.account}:{chat}:{edit_of}" if edit_of else None,
            creates_lead=not update.get("echo", False),
            answer=answer,
        )
        await self.ctx.pipeline.accept(event)
        self.handled.append(update["update_id"])


def spec(sender: ScriptedSender, built: list[ChatTestConnector]) -> ChannelSpec:
    def build(ctx: ConnectorContext) -> ChatTestConnector:
        connector = ChatTestConnector(ctx, sender)
        built.append(connector)
        return connector

    return ChannelSpec(
        name="testchat",
        channels={
            CHANNEL: ChannelDefaults(source_id="UC_VK", title="Чат: {who}", label="Тестовый чат")
        },
        build=build,
    )
