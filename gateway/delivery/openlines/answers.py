"""Sellers' answers from the line, handled from the inbox (stored before Bitrix24 got its
200: it never sends an event twice, so a lost one is a lost answer).

One inbox entry per answer, keyed by Bitrix24's own ids for it (im.chat_id:im.message_id):
the same answer arriving twice is one entry, sent once. Handling is idempotent too, for
an entry handled again after a crash: the ids of the messages it queues are chosen once
and kept (checkpoint `openlines:answer:<member>:<key>`) before anything is queued, and
the store queues a message id only once.

An answer becomes a message to the customer on the conversation the chat names (its
chat.id is the conversation's id), in plain text (BB-code gone), with the files' links,
authored by the seller whose crm_user_id wrote it (else "crm:<user id>"), split when it
is longer than the customer's channel takes. Its last part carries a delivery report
(a message.status row): the mirror worker reports it to the line once it is sent.

A dialog the line closed is recorded as the checkpoint `openlines:dialog:<conversation>`
(which session, when); the customer's next message opens a new one in Open Lines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import orjson

from gateway.assign import SellerSettings
from gateway.chats import Chats
from gateway.conversations import NoConversation, NoSuchLead
from gateway.delivery.openlines.bbcode import to_plain
from gateway.delivery.openlines.events import (
    DIALOG_FINISH,
    MESSAGE_ADD,
    EventInvalid,
    SellerAnswer,
    dialog_finishes,
    seller_answers,
)
from gateway.delivery.openlines.form import FormInvalid, nest, text
from gateway.delivery.openlines.metrics import OpenLinesMetrics
from gateway.delivery.openlines.payload import ReplyRef, reply_checkpoint
from gateway.inbox import InboxItem, Unprocessable
from gateway.models import new_id
from gateway.store.base import Store

log = logging.getLogger(__name__)

INBOX = "openlines"  # the inbox channel of Bitrix24's events


def answer_checkpoint(member: str, key: str) -> str:
    return f"openlines:answer:{member}:{key}"


def dialog_checkpoint(conversation_id: str) -> str:
    return f"openlines:dialog:{conversation_id}"


def finish_key(chat: str, session: str | None) -> str:
    return f"finish:{chat}:{session or '-'}"


def split_text(body: str, limit: int) -> list[str]:
    """`body` in parts of at most `limit` characters, cut at a line break or a space when
    there is one in the second half of a part."""
    parts: list[str] = []
    rest = body
    while len(rest) > limit:
        cut = max(rest.rfind("\n", 0, limit), rest.rfind(" ", 0, limit))
        if cut < limit // 2:
            cut = limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest or not parts:
        parts.append(rest)
    return parts


def answer_text(answer: SellerAnswer) -> str:
    lines = [to_plain(answer.text)] if answer.text else []
    lines += [f"📎 {f.name}: {f.url}" for f in answer.files]
    return "\n".join(line for line in lines if line).strip()


class AnswerHandler:
    def __init__(
        self,
        store: Store,
        chats: Chats,
        sellers: Sequence[SellerSettings],
        metrics: OpenLinesMetrics,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.chats = chats
        self.by_crm_user = {str(s.crm_user_id): s.id for s in sellers if s.crm_user_id}
        self.metrics = metrics
        self._now = now

    async def __call__(self, item: InboxItem) -> None:
        try:
            fields = nest(parse_qsl(item.body.decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, FormInvalid) as exc:
            raise Unprocessable(f"not a Bitrix24 event body: {exc}") from None
        event = (text(fields, "event") or "").upper()
        try:
            if event == MESSAGE_ADD:
                found = [a for a in seller_answers(fields) if a.key == item.key]
                if not found:
                    raise Unprocessable(f"the event carries no answer {item.key}")
                await self.answer(item.account, found[0])
            elif event == DIALOG_FINISH:
                for finish in dialog_finishes(fields):
                    if finish_key(finish.chat, finish.session) == item.key:
                        await self.finish(finish.chat, finish.session)
            else:
                raise Unprocessable(f"leadgate does not handle {event or 'an unnamed event'}")
        except EventInvalid as exc:
            raise Unprocessable(str(exc)) from None

    async def answer(self, member: str, answer: SellerAnswer) -> None:
        conversation = await self.store.get_conversation(answer.chat)
        if conversation is None or conversation.lead_id is None:
            self.metrics.answer("unknown_chat")
            raise Unprocessable(
                f"the line's chat {answer.chat!r} is not a conversation leadgate copied there"
            )
        body = answer_text(answer)
        if not body:
            self.metrics.answer("empty")
            log.info("Open Lines: an empty answer in chat %s (nothing to send)", answer.chat)
            return
        # The messages (ids and parts) are decided once and kept before anything is queued:
        # handled again after a crash, the same ones are asked for, and the store queues
        # each id once.
        mark = answer_checkpoint(member, answer.key)
        kept = await self.store.get_checkpoint(mark)
        if kept:
            planned = [(str(i), str(t)) for i, t in orjson.loads(kept)]
        else:
            sender = self.chats.senders.get(conversation.channel)
            limit = sender.max_text if sender is not None else len(body)
            planned = [(new_id(), part) for part in split_text(body, limit)]
            await self.store.save_checkpoint(mark, orjson.dumps(planned).decode())
        last = planned[-1][0]
        ref = ReplyRef(answer.im_chat_id, answer.im_message_id, answer.chat)
        await self.store.save_checkpoint(reply_checkpoint(last), ref.dumps())
        seller = self.by_crm_user.get(answer.user_id or "")
        author = f"seller:{seller}" if seller else f"crm:{answer.user_id or 'unknown'}"
        now = self._now()
        for message_id, part in planned:
            try:
                await self.store.queue_message(
                    conversation.lead_id,
                    part,
                    author=author,
                    now=now,
                    conversation_id=conversation.id,
                    message_id=message_id,
                    report=message_id == last,
                )
            except (NoSuchLead, NoConversation) as exc:
                self.metrics.answer("unknown_chat")
                raise Unprocessable(
                    f"cannot answer on conversation {conversation.id}: {exc!r}"
                ) from None
        self.chats.queued()
        self.metrics.answer("queued")

    async def finish(self, chat: str, session: str | None) -> None:
        conversation = await self.store.get_conversation(chat)
        if conversation is None:
            log.info("Open Lines closed a dialog of an unknown chat %s", chat)
            return
        record = {"session": session, "closed_at": self._now().isoformat()}
        await self.store.save_checkpoint(
            dialog_checkpoint(conversation.id), orjson.dumps(record).decode()
        )
        self.metrics.dialogs_finished.inc()
