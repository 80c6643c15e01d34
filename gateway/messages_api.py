"""POST /v1/leads/{id}/messages: a reply to the customer, in the chat they wrote in (the
chat named, or the lead's only one: with several, the seller must choose).

The reply is queued (a transcript line and its outbox row, durable) and answered 202 with
its id; the message worker sends it through the channel's sender. The lead JSON
(`GET /v1/leads/{id}`) shows it with its status as it goes.

A client that timed out retries with the same Idempotency-Key and must not reach the
customer twice. The key decides the message's id (a hash of token, lead and key), and the
store queues an id once, in the transaction that stores the line: the key is kept with
the message, atomically, with no table of its own, and two retries racing each other
queue one message. The stored line is then the original request, to compare a retry with.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from ulid import ULID

from gateway.conversations import ChatMessage, Conversation, NoConversation, NoSuchLead
from gateway.errors import ApiError
from gateway.http import idempotency_key, read_json_object, require_token
from gateway.keys import PIPELINE, SETTINGS, STORE
from gateway.store.base import Store

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


def keyed_message_id(token: str, lead_id: str, key: str) -> str:
    """The id of the reply an Idempotency-Key stands for: the key is scoped to the admin
    token that sent it and to the lead. ULID-shaped like every id, not time-ordered."""
    digest = hashlib.sha256(f"leadgate:reply\0{token}\0{lead_id}\0{key}".encode()).digest()
    return str(ULID.from_bytes(digest[:16]))


async def _replayed(
    store: Store, message_id: str, key: str, text: str, author: str, named: str | None
) -> ChatMessage | None:
    """The reply queued before under this key, when the request is the same; None when
    there is none; 422 when the key was used for another message."""
    view = await store.get_message(message_id)
    if view is None:
        return None
    had = view.message
    if had.text != text or had.author != author or named not in (None, had.conversation_id):
        raise ApiError(
            422,
            "idempotency_key_reused",
            f"Idempotency-Key {key!r} was used for another message on this lead"
            f" ({had.id}); a retry must repeat the request unchanged, a new message needs"
            " a new key",
        )
    return had


def _queued(message: ChatMessage, *, replayed: bool = False) -> web.Response:
    # A replay answers what the first request was answered, whatever became of it since.
    body = {"message_id": message.id, "conversation_id": message.conversation_id}
    return web.Response(
        status=202,
        body=orjson.dumps({**body, "status": "queued"}),
        content_type="application/json",
        headers={"Idempotent-Replayed": "true"} if replayed else None,
    )


async def post_message(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    token = require_token(request, settings.admin.tokens, "admin")
    key = idempotency_key(request)
    text, named, seller = _read(await read_json_object(request), {s.id for s in settings.sellers})
    lead_id = request.match_info["lead_id"]
    store, chats = app[STORE], app[PIPELINE].chats
    author = f"seller:{seller}" if seller else f"admin:{token}"
    message_id = keyed_message_id(token, lead_id, key) if key else None
    if message_id is not None and key is not None:
        # Before the choice of conversation: a retry answers what was done, even when the
        # customer has written in another chat since.
        had = await _replayed(store, message_id, key, text, author, named)
        if had is not None:
            return _queued(had, replayed=True)
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
    try:
        message = await store.queue_message(
            lead_id,
            text,
            author=author,
            now=datetime.now(UTC),
            conversation_id=target.id if target is not None else named,
            message_id=message_id,
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
    if message_id is not None and key is not None:
        # A retry racing this request with another body may have queued the id first.
        await _replayed(store, message_id, key, text, author, named)
    chats.queued()
    return _queued(message)


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/leads/{lead_id}/messages", post_message)
