"""POST /v1/leads/{id}/messages: a reply to the customer, in the chat they wrote in (the
chat named, or the lead's only one: with several, the seller must choose).

The reply is queued (a transcript line and its outbox row, durable) and answered 202 with
its id; the message worker sends it through the channel's sender. The lead JSON
(`GET /v1/leads/{id}`) shows it with its status as it goes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from gateway.conversations import Conversation, NoConversation, NoSuchLead
from gateway.errors import ApiError
from gateway.http import read_json_object, require_token
from gateway.keys import PIPELINE, SETTINGS, STORE

# Whatever the channel: no chat takes a novel in one message (Telegram: 4096, VK: 9000).
MAX_TEXT = 9000
_FIELDS = {"text", "conversation_id", "seller"}


def _read(body: dict[str, Any], sellers: set[str]) -> tuple[str, str | None, str | None]:
    fields: dict[str, str] = {}
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        fields["text"] = "the message text, not empty"
    elif len(text) > MAX_TEXT:
        fields["text"] = f"at most {MAX_TEXT} characters"
    conversation = body.get("conversation_id")
    if conversation is not None and (not isinstance(conversation, str) or not conversation):
        fields["conversation_id"] = "a conversation id of this lead, or leave it out"
    seller = body.get("seller")
    if seller is not None and (not isinstance(seller, str) or seller not in sellers):
        fields["seller"] = "the id of a configured seller, or leave it out"
    for name in sorted(set(body) - _FIELDS):
        fields[name] = "unknown field"
    if fields:
        raise ApiError(422, "invalid_message", "the message has invalid fields", fields)
    assert isinstance(text, str)
    return text, conversation, seller


def _target(conversations: tuple[Conversation, ...], named: str | None) -> Conversation | None:
    """The conversation to queue in: the named one, else the lead's only one.

    A lead with several (the customer wrote in Telegram and in VK) is answered only in the
    one the seller names: guessing could put the answer in a chat the customer left, or
    in front of a different person sharing the lead's phone."""
    if named is not None:
        return next((c for c in conversations if c.id == named), None)
    if len(conversations) > 1:
        raise ApiError(
            409,
            "conversation_required",
            "this lead has several conversations: name the one to answer in (conversation_id)",
            extra={"conversations": [_choice(c) for c in _newest_first(conversations)]},
        )
    return conversations[0] if conversations else None


def _newest_first(conversations: tuple[Conversation, ...]) -> list[Conversation]:
    return sorted(
        conversations, key=lambda c: (c.last_inbound_at or c.created_at, c.id), reverse=True
    )


def _choice(c: Conversation) -> dict[str, Any]:
    # As GET /v1/leads/{id} shows a conversation, only what a choice needs.
    return c.model_dump(mode="json", include={"id", "channel", "account", "last_inbound_at"})


async def post_message(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    token = require_token(request, settings.admin.tokens, "admin")
    text, named, seller = _read(await read_json_object(request), {s.id for s in settings.sellers})
    lead_id = request.match_info["lead_id"]
    store, chats = app[STORE], app[PIPELINE].chats
    target = _target((await store.transcript(lead_id)).conversations, named)
    if target is not None:
        sender = chats.senders.get(target.channel)
        if sender is None:
            raise ApiError(
                409,
                "channel_not_configured",
                f"the conversation is on {target.channel.value}, which no connector serves now",
            )
        if len(text) > sender.max_text:
            raise ApiError(
                422,
                "invalid_message",
                "the message is too long for its channel",
                {"text": f"at most {sender.max_text} characters on {target.channel.value}"},
            )
    author = f"seller:{seller}" if seller else f"admin:{token}"
    try:
        message = await store.queue_message(
            lead_id,
            text,
            author=author,
            now=datetime.now(UTC),
            conversation_id=target.id if target is not None else named,
        )
    except NoSuchLead:
        raise ApiError(404, "not_found", "no lead with that id") from None
    except NoConversation:
        detail = (
            "that conversation is not one of this lead's"
            if named is not None
            else "this lead came by no chat: answer it where it came from (phone, email)"
        )
        raise ApiError(409, "no_conversation", detail) from None
    chats.queued()
    body = {
        "message_id": message.id,
        "conversation_id": message.conversation_id,
        "status": message.status.value,
    }
    return web.Response(status=202, body=orjson.dumps(body), content_type="application/json")


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/leads/{lead_id}/messages", post_message)
