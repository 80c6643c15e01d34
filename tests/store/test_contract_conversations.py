"""Conversations in the Store contract, run against every implementation (FACTORIES).

record() of chat messages (a thread per chat, its lead first, transcript lines, edits, the
plan's answers queued with the event), queue_message, transcript, get_message, and the
message.out rows of the outbox: claimed by kind, in order per conversation, their
outcomes written onto the transcript line.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from gateway.conversations import (
    AUTO,
    Direction,
    MessageStatus,
    NoConversation,
    NoSuchLead,
)
from gateway.identity import identity_keys
from gateway.models import Channel, Contact, LeadEvent, ThreadRef, new_id
from gateway.store.base import (
    CRM_KINDS,
    Answer,
    OutboxKind,
    OutboxState,
    OutboxUpdate,
    PersonMatch,
    Recorded,
    Store,
)

from .conftest import Harness
from .contract import SINCE, T0, planner

OWNER = "worker-a"
LEASE = 60.0
MESSAGES = (OutboxKind.MESSAGE_OUT,)


def chat_event(
    number: int,
    *,
    chat: str = "42",
    account: str = "shop",
    at: datetime = T0,
    locale: str | None = "ru",
    edits: str | None = None,
    text: str | None = None,
    phone: str | None = None,
) -> LeadEvent:
    return LeadEvent(
        channel=Channel.TELEGRAM,
        external_id=f"{account}:{chat}:{number}",
        occurred_at=at,
        received_at=at,
        # No handle: the conversation alone must find the lead of a known chat.
        contact=Contact(name="Иван", phones=(phone,) if phone else ()),
        text=text or f"сообщение {number}",
        thread=ThreadRef(account=account, chat=chat, locale=locale),
        edits=edits,
    )


async def record_chat(
    store: Store,
    event: LeadEvent,
    *,
    answers: tuple[str, ...] = (),
    answered_for: datetime | None = None,
    seen: list[PersonMatch] | None = None,
    since: datetime = SINCE,
) -> Recorded:
    """record() with the contract's planner plus the given answers (made once, outside the
    planner, as the pipeline makes them)."""
    base = planner(event, seen=seen)
    made = tuple(Answer(new_id(), text, AUTO) for text in answers)

    def plan(match: PersonMatch) -> object:
        return base(match)._replace(answers=made, answered_for=answered_for)

    return await store.record(event, identity_keys(event.contact), since, plan)  # type: ignore[arg-type]


async def test_a_chat_message_opens_its_conversation_and_becomes_a_line(store: Store) -> None:
    seen: list[PersonMatch] = []
    event = chat_event(1)
    recorded = await record_chat(store, event, seen=seen)
    assert seen[-1].conversation is None
    lead_id = recorded.receipt.lead_id
    assert lead_id is not None
    transcript = await store.transcript(lead_id)
    (conversation,) = transcript.conversations
    assert (conversation.channel, conversation.account, conversation.chat) == (
        Channel.TELEGRAM,
        "shop",
        "42",
    )
    assert conversation.lead_id == lead_id
    assert conversation.locale == "ru"
    assert conversation.last_inbound_at == T0
    (line,) = transcript.messages
    assert line.id == event.id
    assert line.external_id == event.external_id
    assert (line.direction, line.status, line.text) == (
        Direction.IN,
        MessageStatus.RECEIVED,
        "сообщение 1",
    )
    assert line.conversation_id == conversation.id and line.lead_id == lead_id


async def test_the_next_message_joins_the_conversations_open_lead(store: Store) -> None:
    first = await record_chat(store, chat_event(1))
    seen: list[PersonMatch] = []
    second = await record_chat(store, chat_event(2, at=T0 + timedelta(minutes=5)), seen=seen)
    assert second.receipt.lead_id == first.receipt.lead_id
    assert seen[-1].matched_on == "conversation"
    assert seen[-1].conversation is not None
    assert seen[-1].conversation.lead_id == first.receipt.lead_id
    # Another chat of the same account is another conversation and another lead.
    other = await record_chat(store, chat_event(1, chat="43"))
    assert other.receipt.lead_id != first.receipt.lead_id
    assert first.receipt.lead_id is not None
    transcript = await store.transcript(first.receipt.lead_id)
    assert [m.text for m in transcript.messages] == ["сообщение 1", "сообщение 2"]
    assert len(transcript.conversations) == 1
    assert transcript.conversations[0].last_inbound_at == T0 + timedelta(minutes=5)


async def test_a_lead_out_of_the_window_is_not_joined_and_the_conversation_moves_on(
    store: Store,
) -> None:
    first = await record_chat(store, chat_event(1))
    later = T0 + timedelta(days=40)
    second = await record_chat(store, chat_event(2, at=later), since=later - timedelta(days=30))
    assert second.receipt.lead_id != first.receipt.lead_id
    assert first.receipt.lead_id is not None and second.receipt.lead_id is not None
    old = await store.transcript(first.receipt.lead_id)
    new = await store.transcript(second.receipt.lead_id)
    assert [m.text for m in old.messages] == ["сообщение 1"]
    assert [m.text for m in new.messages] == ["сообщение 2"]
    assert old.conversations[0].id == new.conversations[0].id  # one thread, two leads
    assert new.conversations[0].lead_id == second.receipt.lead_id


async def test_a_customers_phone_joins_the_chat_lead_with_their_calls(store: Store) -> None:
    chat = await record_chat(store, chat_event(1, phone="+79161234567"))
    seen: list[PersonMatch] = []
    call = LeadEvent(
        channel=Channel.PHONE,
        external_id="call-1",
        occurred_at=T0 + timedelta(hours=1),
        received_at=T0 + timedelta(hours=1),
        contact=Contact(phones=("+79161234567",)),
    )
    recorded = await store.record(
        call, identity_keys(call.contact), SINCE, planner(call, seen=seen)
    )
    assert recorded.receipt.lead_id == chat.receipt.lead_id
    assert seen[-1].matched_on == "phone"
    assert seen[-1].conversation is None  # not a chat message


async def test_answers_are_queued_with_their_event_and_never_again_on_replay(
    store: Store,
) -> None:
    period = T0 + timedelta(days=1)
    event = chat_event(1)
    recorded = await record_chat(
        store, event, answers=("Привет!", "Откроемся"), answered_for=period
    )
    assert len(recorded.messages) == 2
    again = await record_chat(store, event, answers=("Привет!",), answered_for=period)
    assert again.receipt.outcome.value == "replayed"
    assert again.messages == ()
    lead_id = recorded.receipt.lead_id
    assert lead_id is not None
    transcript = await store.transcript(lead_id)
    assert [(m.direction, m.author, m.status, m.text) for m in transcript.messages] == [
        (Direction.IN, "customer", MessageStatus.RECEIVED, "сообщение 1"),
        (Direction.OUT, AUTO, MessageStatus.QUEUED, "Привет!"),
        (Direction.OUT, AUTO, MessageStatus.QUEUED, "Откроемся"),
    ]
    assert [m.id for m in transcript.messages[1:]] == list(recorded.messages)
    assert transcript.conversations[0].auto_answered_for == period
    # The next message of the conversation sees what was answered.
    seen: list[PersonMatch] = []
    await record_chat(store, chat_event(2), seen=seen)
    assert seen[-1].conversation is not None
    assert seen[-1].conversation.auto_answered_for == period
    items = await store.claim_outbox(
        T0 + timedelta(seconds=1), 10, owner=OWNER, lease_seconds=LEASE, kinds=MESSAGES
    )
    # In order: only the first message of the conversation is claimable at first.
    assert [i.message_id for i in items] == [recorded.messages[0]]
    assert items[0].kind is OutboxKind.MESSAGE_OUT
    assert items[0].lead_id == lead_id
    assert items[0].conversation_id == transcript.conversations[0].id


async def test_an_edit_rewrites_its_line_and_an_edit_of_an_unseen_line_stands_for_it(
    store: Store,
) -> None:
    first = await record_chat(store, chat_event(1))
    edited_at = T0 + timedelta(minutes=1)
    edit = chat_event(101, at=edited_at, edits="shop:42:1", text="исправленный текст")
    await record_chat(store, edit)
    lead_id = first.receipt.lead_id
    assert lead_id is not None
    (line,) = (await store.transcript(lead_id)).messages
    assert (line.text, line.edited_at) == ("исправленный текст", edited_at)
    # An edit of a message we never saw: a line of its own, found by a later edit.
    await record_chat(store, chat_event(102, at=edited_at, edits="shop:42:9", text="девять"))
    await record_chat(store, chat_event(103, at=edited_at, edits="shop:42:9", text="девять!"))
    lines = (await store.transcript(lead_id)).messages
    assert [(m.external_id, m.text) for m in lines] == [
        ("shop:42:1", "исправленный текст"),
        ("shop:42:9", "девять!"),
    ]
    # ...and the message itself, coming after its edits, joins that line: no second line,
    # the edited text stays, the line is dated when the customer wrote it.
    await record_chat(store, chat_event(9, at=T0, text="девят"))
    lines = (await store.transcript(lead_id)).messages
    assert [(m.external_id, m.text, m.at) for m in lines] == [
        ("shop:42:1", "исправленный текст", T0),
        ("shop:42:9", "девять!", T0),
    ]
    assert lines[1].edited_at == edited_at


async def test_queue_message_answers_in_the_latest_conversation(store: Store) -> None:
    first = await record_chat(store, chat_event(1, phone="+79161234567"))
    lead_id = first.receipt.lead_id
    assert lead_id is not None
    # The same person writes from another account later: same lead (by phone).
    second = await record_chat(
        store, chat_event(1, account="support", at=T0 + timedelta(hours=1), phone="+79161234567")
    )
    assert second.receipt.lead_id == lead_id
    conversations = {c.account: c for c in (await store.transcript(lead_id)).conversations}
    at = T0 + timedelta(hours=2)
    latest = await store.queue_message(lead_id, "Здравствуйте", author="seller:anna", now=at)
    assert latest.conversation_id == conversations["support"].id
    assert (latest.status, latest.author, latest.at) == (MessageStatus.QUEUED, "seller:anna", at)
    named = await store.queue_message(
        lead_id, "И вам", author="seller:anna", now=at, conversation_id=conversations["shop"].id
    )
    assert named.conversation_id == conversations["shop"].id
    view = await store.get_message(named.id)
    assert view is not None
    assert view.message == named and view.conversation.id == conversations["shop"].id
    lines = (await store.transcript(lead_id)).messages
    assert [m.id for m in lines][-2:] == [latest.id, named.id]
    items = await store.outbox(OutboxState.PENDING)
    assert {i.message_id for i in items if i.kind is OutboxKind.MESSAGE_OUT} == {
        latest.id,
        named.id,
    }
    assert await store.get_message("01NOSUCHMESSAGE0000000000") is None


async def test_queue_message_refuses_without_a_conversation(store: Store) -> None:
    with pytest.raises(NoSuchLead):
        await store.queue_message("01NOSUCHLEAD00000000000000", "x", author="a", now=T0)
    form = LeadEvent(
        channel=Channel.WEBFORM,
        external_id="form-1",
        occurred_at=T0,
        received_at=T0,
        contact=Contact(phones=("+79160000001",)),
    )
    recorded = await store.record(form, identity_keys(form.contact), SINCE, planner(form))
    assert recorded.receipt.lead_id is not None
    with pytest.raises(NoConversation):
        await store.queue_message(recorded.receipt.lead_id, "x", author="a", now=T0)
    chat = await record_chat(store, chat_event(1))
    other = await record_chat(store, chat_event(1, chat="99"))
    assert chat.receipt.lead_id is not None and other.receipt.lead_id is not None
    foreign = (await store.transcript(other.receipt.lead_id)).conversations[0].id
    with pytest.raises(NoConversation):
        await store.queue_message(
            chat.receipt.lead_id, "x", author="a", now=T0, conversation_id=foreign
        )


async def _queued(store: Store, chat: str, count: int) -> tuple[str, list[str]]:
    recorded = await record_chat(store, chat_event(1, chat=chat))
    lead_id = recorded.receipt.lead_id
    assert lead_id is not None
    ids = [
        (await store.queue_message(lead_id, f"{chat}/{n}", author="seller:a", now=T0)).id
        for n in range(count)
    ]
    return lead_id, ids


async def test_message_rows_go_by_kind_and_in_order_per_conversation(store: Store) -> None:
    _, first = await _queued(store, "1", 2)
    _, second = await _queued(store, "2", 2)
    now = T0 + timedelta(seconds=1)
    crm = await store.claim_outbox(now, 10, owner=OWNER, lease_seconds=LEASE, kinds=CRM_KINDS)
    assert crm and all(i.kind in CRM_KINDS for i in crm)
    items = await store.claim_outbox(now, 10, owner=OWNER, lease_seconds=LEASE, kinds=MESSAGES)
    assert [i.message_id for i in items] == [first[0], second[0]]
    # The held first messages keep their successors back, for any owner.
    assert (
        await store.claim_outbox(now, 10, owner="worker-b", lease_seconds=LEASE, kinds=MESSAGES)
        == []
    )
    retry = OutboxUpdate(
        items[0].id,
        OutboxState.PENDING,
        error="429",
        next_attempt_at=now + timedelta(minutes=1),
        message_status=MessageStatus.RETRYING,
    )
    sent = OutboxUpdate(
        items[1].id,
        OutboxState.DELIVERED,
        remote_id="777",
        message_status=MessageStatus.SENT,
    )
    assert await store.update_outbox("messages", [retry, sent], now, owner=OWNER) == []
    # Conversation 1 waits for its retrying first message; conversation 2 goes on.
    later = await store.claim_outbox(now, 10, owner=OWNER, lease_seconds=LEASE, kinds=MESSAGES)
    assert [i.message_id for i in later] == [second[1]]
    view = await store.get_message(first[0])
    assert view is not None
    assert (view.message.status, view.message.status_reason) == (MessageStatus.RETRYING, "429")
    view = await store.get_message(second[0])
    assert view is not None
    assert (view.message.status, view.message.external_id) == (MessageStatus.SENT, "777")
    assert view.conversation.last_outbound_at == now
    stats = await store.outbox_stats(MESSAGES)
    assert stats.pending == 3  # first[0] waiting, first[1] behind it, second[1] held


async def test_final_outcomes_of_messages(store: Store) -> None:
    _, ids = await _queued(store, "1", 1)
    _, more = await _queued(store, "2", 1)
    now = T0 + timedelta(seconds=1)
    items = await store.claim_outbox(now, 10, owner=OWNER, lease_seconds=LEASE, kinds=MESSAGES)
    blocked, dead = items
    reason = "Forbidden: bot was blocked by the user"
    updates = [
        OutboxUpdate(
            blocked.id,
            OutboxState.CLOSED,
            error=reason,
            message_status=MessageStatus.UNDELIVERABLE,
        ),
        OutboxUpdate(
            dead.id,
            OutboxState.DEAD,
            error="gave up after 8 attempts: 502",
            message_status=MessageStatus.UNDELIVERABLE,
        ),
    ]
    assert await store.update_outbox("messages", updates, now, owner=OWNER) == []
    view = await store.get_message(ids[0])
    assert view is not None
    assert (view.message.status, view.message.status_reason) == (
        MessageStatus.UNDELIVERABLE,
        reason,
    )
    # Closed is final and not the dead-letter queue: retrying every dead item leaves it.
    assert [i.id for i in await store.outbox(OutboxState.CLOSED)] == [blocked.id]
    assert [i.id for i in await store.outbox(OutboxState.DEAD)] == [dead.id]
    assert await store.retry_outbox(None, now) == 1
    view = await store.get_message(more[0])
    assert view is not None
    assert (view.message.status, view.message.status_reason) == (MessageStatus.QUEUED, None)
    assert (await store.outbox_stats(MESSAGES)).dead == 0
    # Closed rows age out with the delivered ones.
    await store.purge_outbox(now + timedelta(days=1))
    assert await store.outbox(OutboxState.CLOSED) == []


async def test_conversations_survive_a_restart(harness: Harness) -> None:
    recorded = await record_chat(harness.store, chat_event(1), answers=("Привет",))
    store = await harness.reopen()
    seen: list[PersonMatch] = []
    again = await record_chat(store, chat_event(2), seen=seen)
    assert again.receipt.lead_id == recorded.receipt.lead_id
    assert seen[-1].matched_on == "conversation"
    assert recorded.receipt.lead_id is not None
    transcript = await store.transcript(recorded.receipt.lead_id)
    assert [m.direction for m in transcript.messages] == [Direction.IN, Direction.OUT, Direction.IN]
