"""Conversations in the Redis store: what a chat message adds to record()'s transaction,
the transcript reads, and queueing a message to a customer.

A conversation and its lines are written in the transaction of the event that brought
them; record() watched the conversation (and its lines' external ids) while deciding, so
two messages of one chat on two replicas are applied one after the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from gateway.conversations import (
    ChatMessage,
    Conversation,
    Direction,
    MessageStatus,
    MessageView,
    NoConversation,
    NoSuchLead,
    Transcript,
)
from gateway.models import Attachment, LeadEvent, new_id
from gateway.store.base import OutboxKind, Plan, StoreUnavailable
from gateway.store.changes import (
    LineChange,
    answer_lines,
    conversation_after,
    inbound_line,
    line_change,
)
from gateway.store.redis_keys import (
    INSERT_IN_ORDER,
    Keys,
    fields,
    maybe_moment,
    moment,
    queue_script,
    texts,
    ts,
    unavailable,
)
from gateway.store.redis_match import conversation_from
from gateway.store.redis_outbox import add_outbox

_ATTEMPTS = 200


def conversation_fields(c: Conversation) -> dict[str, str]:
    """The fields record() owns (last_outbound_at is the message worker's)."""
    fields = {
        "id": c.id,
        "channel": c.channel.value,
        "account": c.account,
        "chat": c.chat,
        "created_at": ts(c.created_at),
    }
    optional: dict[str, str | None] = {
        "lead_id": c.lead_id,
        "handle": c.handle,
        "locale": c.locale,
        "last_inbound_at": ts(c.last_inbound_at) if c.last_inbound_at else None,
        "auto_answered_for": ts(c.auto_answered_for) if c.auto_answered_for else None,
    }
    fields.update({name: value for name, value in optional.items() if value is not None})
    return fields


def _attachments(items: tuple[Attachment, ...]) -> str | None:
    if not items:
        return None
    return orjson.dumps([a.model_dump(exclude_none=True) for a in items]).decode()


def message_fields(m: ChatMessage) -> list[str]:
    """Field, value pairs (absent fields are NULL)."""
    optional: dict[str, str | None] = {
        "lead_id": m.lead_id,
        "text": m.text,
        "attachments": _attachments(m.attachments),
        "status_reason": m.status_reason,
        "external_id": m.external_id,
        "edited_at": ts(m.edited_at) if m.edited_at else None,
    }
    fields = {
        "id": m.id,
        "conversation_id": m.conversation_id,
        "direction": m.direction.value,
        "author": m.author,
        "at": ts(m.at),
        "status": m.status.value,
        "ask_phone": "1" if m.ask_phone else "0",
        **{name: value for name, value in optional.items() if value is not None},
    }
    return [item for pair in fields.items() for item in pair]


def message_from(raw: Mapping[str, str]) -> ChatMessage:
    attachments = raw.get("attachments")
    return ChatMessage(
        id=raw["id"],
        conversation_id=raw["conversation_id"],
        lead_id=raw.get("lead_id"),
        direction=Direction(raw["direction"]),
        author=raw["author"],
        text=raw.get("text"),
        attachments=tuple(Attachment(**a) for a in orjson.loads(attachments))
        if attachments
        else (),
        at=moment(raw["at"]),
        status=MessageStatus(raw["status"]),
        status_reason=raw.get("status_reason"),
        external_id=raw.get("external_id"),
        edited_at=maybe_moment(raw.get("edited_at")),
        ask_phone=raw.get("ask_phone") == "1",
    )


def add_line(pipe: Pipeline, k: Keys, line: ChatMessage) -> None:
    """Queue a transcript line on `pipe`: its order number is taken at commit."""
    indexes = [k.messages_of_lead(line.lead_id)] if line.lead_id else []
    queue_script(
        pipe,
        INSERT_IN_ORDER,
        [k.seq("msg"), k.message(line.id), *indexes],
        [line.id, *message_fields(line)],
    )
    if line.lead_id:
        pipe.sadd(k.lead_conversations(line.lead_id), line.conversation_id)
    if line.external_id:
        pipe.hsetnx(k.conversation_lines(line.conversation_id), line.external_id, line.id)


# The original of a line its early edit made: the line gets the moment the customer wrote
# it, if earlier (the edited text stays). KEYS: the line; ARGV: the message's moment.
_ORIGINAL_LATE = """
local f = redis.call('HMGET', KEYS[1], 'at', 'direction')
if f[2] == 'in' and tonumber(ARGV[1]) < tonumber(f[1]) then
  redis.call('HSET', KEYS[1], 'at', ARGV[1])
end
return 1
"""


def thread_writes(
    pipe: Pipeline,
    k: Keys,
    event: LeadEvent,
    decision: Plan,
    lead_id: str | None,
    before: Conversation | None,
    line_id: str | None,
) -> None:
    """Queue on `pipe` what a chat message brings: its conversation as it becomes, its line
    (or the edit of one), the plan's answers and their outbox rows. `line_id`: the line of
    the external id the message edits, or of its own (one its early edit made)."""
    thread = event.thread
    assert thread is not None
    at = event.occurred_at
    conversation = conversation_after(event, decision, lead_id, before)
    if before is None:
        key = k.conversation_key(event.channel.value, thread.account, thread.chat)
        pipe.set(key, conversation.id)
    pairs = [item for pair in conversation_fields(conversation).items() for item in pair]
    pipe.hset(k.conversation(conversation.id), items=pairs)
    found = before is not None and line_id is not None
    change = line_change(event, found and event.edits is not None, found and event.edits is None)
    if change is LineChange.EDIT:
        assert line_id is not None
        key = k.message(line_id)
        changes = {"text": event.text, "attachments": _attachments(event.attachments)}
        pipe.hset(key, "edited_at", ts(at))
        for name, value in changes.items():
            if value is None:
                pipe.hdel(key, name)
            else:
                pipe.hset(key, name, value)
    elif change is LineChange.ORIGINAL:
        assert line_id is not None
        queue_script(pipe, _ORIGINAL_LATE, [k.message(line_id)], [ts(at)])
    else:
        line = inbound_line(event, conversation.id, lead_id)
        add_line(pipe, k, line)
        if decision.mirror:
            add_outbox(
                pipe,
                k,
                lead_id=lead_id or "",
                event_id=event.id,
                kind=OutboxKind.MESSAGE_MIRROR,
                due=ts(event.received_at),
                message_id=line.id,
                conversation_id=conversation.id,
            )
    for reply in answer_lines(event, decision, conversation.id, lead_id):
        add_line(pipe, k, reply)
        add_outbox(
            pipe,
            k,
            lead_id=lead_id or "",
            event_id=event.id,
            kind=OutboxKind.MESSAGE_OUT,
            due=ts(event.received_at),
            message_id=reply.id,
            conversation_id=conversation.id,
        )


def _latest_first(c: Conversation) -> tuple[datetime, str]:
    return (c.last_inbound_at or c.created_at, c.id)


class ChatMethods:
    """Mixed into RedisStore, which provides the client and the key layout."""

    _r: aioredis.Redis
    _w: aioredis.Redis  # acknowledged writes (see RedisStore.replicated)
    exclusive: Callable[[], contextlib.AbstractAsyncContextManager[object]]
    replicated: Callable[[], Awaitable[None]]
    k: Keys

    async def _conversations(self, ids: list[str]) -> list[Conversation]:
        if not ids:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for conversation_id in ids:
                pipe.hgetall(self.k.conversation(conversation_id))
            rows = await pipe.execute()
        return [conversation_from(row) for row in rows if row]

    async def transcript(self, lead_id: str) -> Transcript:
        async with unavailable():
            ids = texts(await self._r.zrange(self.k.messages_of_lead(lead_id), 0, -1))
            async with self._r.pipeline(transaction=False) as pipe:
                for message_id in ids:
                    pipe.hgetall(self.k.message(message_id))
                rows = await pipe.execute()
            messages = tuple(message_from(row) for row in rows if row)
            order = list(dict.fromkeys(m.conversation_id for m in messages))
            conversations = await self._conversations(order)
        return Transcript(tuple(conversations), messages)

    async def get_message(self, message_id: str) -> MessageView | None:
        async with unavailable():
            raw = fields(await self._r.hgetall(self.k.message(message_id)))
            if not raw:
                return None
            message = message_from(raw)
            found = await self._conversations([message.conversation_id])
        return MessageView(message, found[0]) if found else None

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        async with unavailable():
            found = await self._conversations([conversation_id])
        return found[0] if found else None

    async def queue_message(
        self,
        lead_id: str,
        text: str,
        *,
        author: str,
        now: datetime,
        conversation_id: str | None = None,
        ask_phone: bool = False,
        message_id: str | None = None,
        report: bool = False,
    ) -> ChatMessage:
        # The line as it will be, but for its conversation: one id whatever the retries.
        draft = ChatMessage(
            id=message_id or new_id(),
            conversation_id="",
            lead_id=lead_id,
            direction=Direction.OUT,
            author=author,
            text=text,
            at=now,
            status=MessageStatus.QUEUED,
            ask_phone=ask_phone,
        )
        async with self.exclusive(), unavailable():
            for attempt in range(_ATTEMPTS):
                queued = None
                async with self._w.pipeline(transaction=True) as pipe:
                    with contextlib.suppress(WatchError):
                        queued = await self._queue_once(
                            pipe, draft, conversation_id, again=bool(message_id), report=report
                        )
                if queued is not None:
                    await self.replicated()  # a 202 means the replicas have it
                    return queued
                if attempt >= 3:
                    await asyncio.sleep(random.uniform(0, 0.005))
        raise StoreUnavailable(f"message to lead {lead_id}: too much contention, not queued")

    async def _queue_once(
        self,
        pipe: Pipeline,
        draft: ChatMessage,
        wanted: str | None,
        *,
        again: bool,
        report: bool,
    ) -> ChatMessage:
        """One attempt of queue_message (raises WatchError when it lost a race)."""
        k = self.k
        assert draft.lead_id is not None
        lead_id = draft.lead_id
        if again:
            # A caller repeating itself after a crash gets the line as first stored.
            await pipe.watch(k.message(draft.id))
            had = fields(await pipe.hgetall(k.message(draft.id)))
            if had:
                return message_from(had)
        await pipe.watch(k.lead(lead_id), k.lead_conversations(lead_id))
        if not await pipe.exists(k.lead(lead_id)):
            raise NoSuchLead(lead_id)
        if wanted is not None:
            has = await pipe.sismember(k.lead_conversations(lead_id), wanted)
            candidates = [wanted] if has else []
        else:
            candidates = sorted(texts(await pipe.smembers(k.lead_conversations(lead_id))))
        rows = [fields(await pipe.hgetall(k.conversation(c))) for c in candidates]
        found = [conversation_from(row) for row in rows if row]
        if not found:
            raise NoConversation(lead_id)
        target = max(found, key=_latest_first)
        line = draft.model_copy(update={"conversation_id": target.id})
        kinds = [OutboxKind.MESSAGE_OUT] + ([OutboxKind.MESSAGE_STATUS] if report else [])
        pipe.multi()  # type: ignore[no-untyped-call]
        for kind in kinds:
            add_outbox(
                pipe,
                k,
                lead_id=lead_id,
                event_id="",
                kind=kind,
                due=ts(line.at),
                message_id=line.id,
                conversation_id=target.id,
            )
        add_line(pipe, k, line)
        await pipe.execute()
        return line
