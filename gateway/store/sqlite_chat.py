"""Conversations in the SQLite store: the rows a chat message adds to record()'s write, the
transcript reads, and queueing a message to a customer.

A conversation and its lines are written in the same batch transaction as the event that
brought them. Between decision and commit they live in the store's overlay, like leads:
the next message of the same chat (in the same batch) must find the conversation the
first one opened, and an edit the line it edits.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson

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
from gateway.models import Attachment, Channel, Lead, LeadEvent, new_id
from gateway.store.base import OutboxKind, Plan
from gateway.store.changes import (
    LineChange,
    answer_lines,
    conversation_after,
    inbound_line,
    line_change,
)
from gateway.store.sqlite_queries import from_epoch, to_epoch

T = TypeVar("T")

_CONVERSATION_COLUMNS = (
    "id, channel, account, chat, lead_id, handle, locale, created_at, last_inbound_at,"
    " last_outbound_at, auto_answered_for"
)
_MESSAGE_COLUMNS = (
    "id, conversation_id, lead_id, direction, author, text, attachments, at, status,"
    " status_reason, external_id, edited_at, ask_phone"
)
# record() owns what it writes of a conversation; last_outbound_at belongs to the message
# worker's outcomes (a full-row upsert from an older decision must not undo one).
UPSERT_CONVERSATION = (
    f"INSERT INTO conversations ({_CONVERSATION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT(id) DO UPDATE SET lead_id = excluded.lead_id, handle = excluded.handle,"
    " locale = excluded.locale, last_inbound_at = excluded.last_inbound_at,"
    " auto_answered_for = excluded.auto_answered_for"
)
INSERT_MESSAGE = f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
_EDIT_MESSAGE = (
    "UPDATE messages SET text = ?, attachments = ?, edited_at = ?"
    " WHERE conversation_id = ? AND external_id = ?"
)
# The original of a line an early edit made: the edited text stays, the line gets the
# moment the customer wrote it.
_ORIGINAL_LATE = (
    "UPDATE messages SET at = MIN(at, ?) WHERE conversation_id = ? AND external_id = ?"
    " AND direction = 'in'"
)
INSERT_MESSAGE_OUTBOX = (
    "INSERT INTO outbox (lead_id, event_id, kind, next_attempt_at, created_at, state,"
    " message_id, conversation_id) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)"
)
# The same, each only while no line with the id given last exists (queue_message with a
# caller's message_id: rows first, then the line).
INSERT_MESSAGE_OUTBOX_ONCE = (
    "INSERT INTO outbox (lead_id, event_id, kind, next_attempt_at, created_at, state,"
    " message_id, conversation_id) SELECT ?, ?, ?, ?, ?, 'pending', ?, ?"
    " WHERE NOT EXISTS (SELECT 1 FROM messages WHERE id = ?)"
)
INSERT_MESSAGE_ONCE = (
    f"INSERT INTO messages ({_MESSAGE_COLUMNS}) SELECT ?,?,?,?,?,?,?,?,?,?,?,?,?"
    " WHERE NOT EXISTS (SELECT 1 FROM messages WHERE id = ?)"
)


def _epoch(dt: datetime | None) -> float | None:
    return None if dt is None else to_epoch(dt)


def _moment(ts: float | None) -> datetime | None:
    return None if ts is None else from_epoch(ts)


def conversation_row(c: Conversation) -> tuple[Any, ...]:
    return (
        c.id,
        c.channel.value,
        c.account,
        c.chat,
        c.lead_id,
        c.handle,
        c.locale,
        to_epoch(c.created_at),
        _epoch(c.last_inbound_at),
        _epoch(c.last_outbound_at),
        _epoch(c.auto_answered_for),
    )


def _conversation(r: Sequence[Any]) -> Conversation:
    return Conversation(
        id=r[0],
        channel=Channel(r[1]),
        account=r[2],
        chat=r[3],
        lead_id=r[4],
        handle=r[5],
        locale=r[6],
        created_at=from_epoch(r[7]),
        last_inbound_at=_moment(r[8]),
        last_outbound_at=_moment(r[9]),
        auto_answered_for=_moment(r[10]),
    )


def _attachments(items: Sequence[Attachment]) -> bytes | None:
    return orjson.dumps([a.model_dump(exclude_none=True) for a in items]) if items else None


def message_row(m: ChatMessage) -> tuple[Any, ...]:
    return (
        m.id,
        m.conversation_id,
        m.lead_id,
        m.direction.value,
        m.author,
        m.text,
        _attachments(m.attachments),
        to_epoch(m.at),
        m.status.value,
        m.status_reason,
        m.external_id,
        _epoch(m.edited_at),
        int(m.ask_phone),
    )


def _message(r: Sequence[Any]) -> ChatMessage:
    return ChatMessage(
        id=r[0],
        conversation_id=r[1],
        lead_id=r[2],
        direction=Direction(r[3]),
        author=r[4],
        text=r[5],
        attachments=tuple(Attachment(**a) for a in orjson.loads(r[6])) if r[6] else (),
        at=from_epoch(r[7]),
        status=MessageStatus(r[8]),
        status_reason=r[9],
        external_id=r[10],
        edited_at=_moment(r[11]),
        ask_phone=bool(r[12]),
    )


def _line(db: sqlite3.Connection, message_id: str) -> ChatMessage | None:
    row = db.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,))
    found = row.fetchone()
    return _message(found) if found else None


def read_conversation(db: sqlite3.Connection, conversation_id: str) -> Conversation | None:
    row = db.execute(
        f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ?", (conversation_id,)
    ).fetchone()
    return _conversation(row) if row else None


def _latest_conversation(db: sqlite3.Connection, lead_id: str) -> Conversation | None:
    row = db.execute(
        f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id IN"
        " (SELECT conversation_id FROM messages WHERE lead_id = ?)"
        " ORDER BY COALESCE(last_inbound_at, created_at) DESC, id DESC LIMIT 1",
        (lead_id,),
    ).fetchone()
    return _conversation(row) if row else None


def _has_lines(db: sqlite3.Connection, conversation_id: str, lead_id: str) -> bool:
    return (
        db.execute(
            "SELECT 1 FROM messages WHERE lead_id = ? AND conversation_id = ? LIMIT 1",
            (lead_id, conversation_id),
        ).fetchone()
        is not None
    )


class ChatMethods:
    """Mixed into SQLiteStore, which provides `_db()`, `write()`, `_transact()` and the
    overlay dicts below."""

    # (channel, account, chat) -> the conversation as an uncommitted write left it, and
    # that write (whose settling forgets it, unless a newer write replaced it).
    _pending_conversations: dict[tuple[str, str, str], tuple[Conversation, Any]]
    # (conversation id, external id) of inbound lines in uncommitted writes.
    _pending_lines: set[tuple[str, str]]

    def _db(self) -> sqlite3.Connection:
        raise NotImplementedError

    @property
    def _is_client(self) -> bool:
        raise NotImplementedError

    async def write(self, statements: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        raise NotImplementedError

    async def _transact(self, work: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    # gateway.store.sqlite_match.MatchMethods provides it (overlay-aware).
    _load_lead: Callable[[str], Lead | None]

    # --- the overlay-aware lookups a decision takes ---------------------------------------

    def _conversation_of(self, event: LeadEvent) -> Conversation | None:
        thread = event.thread
        if thread is None:
            return None
        key = (event.channel.value, thread.account, thread.chat)
        if (pending := self._pending_conversations.get(key)) is not None:
            return pending[0]
        row = (
            self._db()
            .execute(
                f"SELECT {_CONVERSATION_COLUMNS} FROM conversations"
                " WHERE channel = ? AND account = ? AND chat = ?",
                key,
            )
            .fetchone()
        )
        return _conversation(row) if row else None

    def _has_line(self, conversation_id: str, external_id: str) -> bool:
        if (conversation_id, external_id) in self._pending_lines:
            return True
        row = (
            self._db()
            .execute(
                "SELECT 1 FROM messages WHERE conversation_id = ? AND external_id = ? LIMIT 1",
                (conversation_id, external_id),
            )
            .fetchone()
        )
        return row is not None

    def _add_thread(self, item: Any, event: LeadEvent, decision: Plan, lead_id: str | None) -> None:
        """Add to `item` (a pending write) what a chat message brings: its conversation as it
        becomes, its transcript line (or an edit of one), the plan's answers and their
        outbox rows; and mark them in the overlay."""
        thread = event.thread
        assert thread is not None
        key = (event.channel.value, thread.account, thread.chat)
        before = self._conversation_of(event)
        at = event.occurred_at
        conversation = conversation_after(event, decision, lead_id, before)
        self._pending_conversations[key] = (conversation, item)
        item.thread_keys.append(key)
        item.conversations.append(conversation_row(conversation))
        edited = event.edits
        change = line_change(
            event,
            edited is not None and before is not None and self._has_line(before.id, edited),
            edited is None and before is not None and self._has_line(before.id, event.external_id),
        )
        if change is LineChange.EDIT:
            assert before is not None and edited is not None
            item.statements.append(
                (
                    _EDIT_MESSAGE,
                    (event.text, _attachments(event.attachments), to_epoch(at), before.id, edited),
                )
            )
        elif change is LineChange.ORIGINAL:
            assert before is not None
            item.statements.append((_ORIGINAL_LATE, (to_epoch(at), before.id, event.external_id)))
        else:
            line = inbound_line(event, conversation.id, lead_id)
            external_id = line.external_id or event.external_id
            item.messages.append(message_row(line))
            self._pending_lines.add((conversation.id, external_id))
            item.lines.append((conversation.id, external_id))
            if decision.mirror:
                received = to_epoch(event.received_at)
                item.statements.append(
                    (
                        INSERT_MESSAGE_OUTBOX,
                        (
                            lead_id or "",
                            event.id,
                            OutboxKind.MESSAGE_MIRROR.value,
                            received,
                            received,
                            line.id,
                            conversation.id,
                        ),
                    )
                )
        now = to_epoch(event.received_at)
        for reply in answer_lines(event, decision, conversation.id, lead_id):
            item.messages.append(message_row(reply))
            item.statements.append(
                (
                    INSERT_MESSAGE_OUTBOX,
                    (
                        lead_id or "",
                        event.id,
                        OutboxKind.MESSAGE_OUT.value,
                        now,
                        now,
                        reply.id,
                        conversation.id,
                    ),
                )
            )

    def _forget_thread(self, item: Any) -> None:
        """The overlay entries of a settled write (committed or failed)."""
        for key in item.thread_keys:
            entry = self._pending_conversations.get(key)
            # A newer write of the same conversation may wait in a later batch: keep it.
            if entry is not None and entry[1] is item:
                del self._pending_conversations[key]
        for mark in item.lines:
            self._pending_lines.discard(mark)

    # --- reads ----------------------------------------------------------------------------

    async def transcript(self, lead_id: str) -> Transcript:
        db = self._db()
        messages = tuple(
            _message(r)
            for r in db.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE lead_id = ? ORDER BY seq",
                (lead_id,),
            )
        )
        ids = list(dict.fromkeys(m.conversation_id for m in messages))
        found = {
            c.id: c
            for c in (
                _conversation(r)
                for r in db.execute(
                    f"SELECT {_CONVERSATION_COLUMNS} FROM conversations"
                    f" WHERE id IN ({','.join('?' * len(ids))})",
                    ids,
                )
            )
        }
        return Transcript(tuple(found[i] for i in ids if i in found), messages)

    async def get_message(self, message_id: str) -> MessageView | None:
        db = self._db()
        row = db.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)
        ).fetchone()
        if row is None:
            return None
        message = _message(row)
        conversation = read_conversation(db, message.conversation_id)
        return None if conversation is None else MessageView(message, conversation)

    # --- queueing a message ---------------------------------------------------------------

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
        def build(db: sqlite3.Connection, lead_exists: bool) -> tuple[ChatMessage, bool]:
            """The line to queue and True, or the line queued before under `message_id`
            (a caller repeating itself after a crash) and False."""
            if message_id is not None and (had := _line(db, message_id)) is not None:
                return had, False
            if not lead_exists:
                raise NoSuchLead(lead_id)
            if conversation_id is not None:
                found = (
                    read_conversation(db, conversation_id)
                    if _has_lines(db, conversation_id, lead_id)
                    else None
                )
            else:
                found = _latest_conversation(db, lead_id)
            if found is None:
                raise NoConversation(lead_id)
            line = ChatMessage(
                id=message_id or new_id(),
                conversation_id=found.id,
                lead_id=lead_id,
                direction=Direction.OUT,
                author=author,
                text=text,
                at=now,
                status=MessageStatus.QUEUED,
                ask_phone=ask_phone,
            )
            return line, True

        def statements(message: ChatMessage) -> list[tuple[str, tuple[Any, ...]]]:
            at = to_epoch(now)
            kinds = [OutboxKind.MESSAGE_OUT] + ([OutboxKind.MESSAGE_STATUS] if report else [])
            rows: list[tuple[str, tuple[Any, ...]]] = [
                (
                    # Its rows first, each only while the line is not there yet: two calls
                    # with one message_id in one batch queue it once.
                    INSERT_MESSAGE_OUTBOX_ONCE,
                    (
                        lead_id,
                        "",
                        kind.value,
                        at,
                        at,
                        message.id,
                        message.conversation_id,
                        message.id,
                    ),
                )
                for kind in kinds
            ]
            return [*rows, (INSERT_MESSAGE_ONCE, (*message_row(message), message.id))]

        if self._is_client:

            def queue(db: sqlite3.Connection) -> ChatMessage:
                exists = db.execute("SELECT 1 FROM leads WHERE id = ?", (lead_id,)).fetchone()
                message, new = build(db, exists is not None)
                if new:
                    for sql, params in statements(message):
                        db.execute(sql, params)
                return message

            return await self._transact(queue)
        message, new = build(self._db(), self._load_lead(lead_id) is not None)
        if new:
            await self.write(statements(message))
        return message

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        return read_conversation(self._db(), conversation_id)


# --- everything, for moving house (leadgate store copy) ------------------------------------------


def all_conversations(db: sqlite3.Connection) -> list[Conversation]:
    rows = db.execute(f"SELECT {_CONVERSATION_COLUMNS} FROM conversations ORDER BY id")
    return [_conversation(r) for r in rows]


def all_messages(db: sqlite3.Connection) -> list[ChatMessage]:
    """Every transcript line, in the order stored."""
    rows = db.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages ORDER BY seq")
    return [_message(r) for r in rows]
