"""What Bitrix24 Open Lines needs of the Store, run against every implementation (FACTORIES).

- record() with `Plan.mirror`: the new inbound line gets a `message.mirror` outbox row in
  the same transaction (none for an edit of a known line, none without the flag);
- queue_message with a caller's `message_id` is idempotent (a repeat after a crash queues
  nothing and returns the line), and with `report` adds a `message.status` row;
- get_conversation;
- claims per kind and conversation: mirror rows go in order per conversation, and one
  kind waiting never holds up another of the same conversation;
- retry_outbox of an Open Lines row leaves the transcript line alone.
"""

from __future__ import annotations

from datetime import timedelta

from gateway.conversations import Direction, MessageStatus
from gateway.identity import identity_keys
from gateway.models import LeadEvent, new_id
from gateway.store.base import (
    MIRROR_KINDS,
    OutboxItem,
    OutboxKind,
    OutboxState,
    OutboxUpdate,
    PersonMatch,
    Plan,
    Recorded,
    Store,
)

from .contract import SINCE, T0, planner
from .test_contract_conversations import chat_event

OWNER = "openlines-worker"
LEASE = 60.0
MIRROR = (OutboxKind.MESSAGE_MIRROR,)


async def record_mirrored(store: Store, event: LeadEvent, *, mirror: bool = True) -> Recorded:
    base = planner(event)

    def plan(match: PersonMatch) -> Plan:
        return base(match)._replace(mirror=mirror)

    return await store.record(event, identity_keys(event.contact), SINCE, plan)


async def rows(store: Store, kind: OutboxKind) -> list[OutboxItem]:
    return [item for item in await store.outbox(limit=1000) if item.kind is kind]


async def test_a_mirrored_chat_message_gets_its_mirror_row(store: Store) -> None:
    event = chat_event(1)
    recorded = await record_mirrored(store, event)
    (row,) = await rows(store, OutboxKind.MESSAGE_MIRROR)
    assert row.message_id == event.id
    assert row.event_id == event.id
    assert row.lead_id == recorded.receipt.lead_id
    view = await store.get_message(event.id)
    assert view is not None
    assert row.conversation_id == view.conversation.id
    assert row.state is OutboxState.PENDING


async def test_no_mirror_row_without_the_flag_or_for_an_edit_or_a_replay(store: Store) -> None:
    await record_mirrored(store, chat_event(1), mirror=False)
    assert await rows(store, OutboxKind.MESSAGE_MIRROR) == []
    second = chat_event(2, at=T0 + timedelta(minutes=1))
    await record_mirrored(store, second)
    await record_mirrored(store, second)  # the sender's retry: replayed
    edit = chat_event(3, at=T0 + timedelta(minutes=2), edits=second.external_id, text="поправил")
    await record_mirrored(store, edit)
    assert [r.message_id for r in await rows(store, OutboxKind.MESSAGE_MIRROR)] == [second.id]


async def test_get_conversation(store: Store) -> None:
    event = chat_event(1)
    await record_mirrored(store, event)
    view = await store.get_message(event.id)
    assert view is not None
    assert await store.get_conversation(view.conversation.id) == view.conversation
    assert await store.get_conversation("no-such-conversation") is None


async def test_queue_message_with_a_callers_id_queues_once(store: Store) -> None:
    recorded = await record_mirrored(store, chat_event(1), mirror=False)
    lead_id = recorded.receipt.lead_id
    assert lead_id is not None
    chosen = new_id()
    first = await store.queue_message(
        lead_id, "Здравствуйте!", author="crm:27", now=T0, message_id=chosen, report=True
    )
    again = await store.queue_message(
        lead_id,
        "Здравствуйте!",
        author="crm:27",
        now=T0 + timedelta(minutes=1),
        message_id=chosen,
        report=True,
    )
    assert first.id == again.id == chosen
    assert again.at == T0  # the line as first stored
    transcript = await store.transcript(lead_id)
    assert [m.id for m in transcript.messages if m.direction is Direction.OUT] == [chosen]
    assert [r.message_id for r in await rows(store, OutboxKind.MESSAGE_OUT)] == [chosen]
    (status,) = await rows(store, OutboxKind.MESSAGE_STATUS)
    assert status.message_id == chosen
    assert status.conversation_id == first.conversation_id


async def test_queue_message_reports_only_when_asked(store: Store) -> None:
    recorded = await record_mirrored(store, chat_event(1), mirror=False)
    assert recorded.receipt.lead_id is not None
    await store.queue_message(recorded.receipt.lead_id, "Ответ", author="admin:ops", now=T0)
    assert await rows(store, OutboxKind.MESSAGE_STATUS) == []


async def test_mirror_rows_go_in_order_per_conversation(store: Store) -> None:
    first, second = chat_event(1), chat_event(2, at=T0 + timedelta(seconds=5))
    other = chat_event(1, chat="77")
    for event in (first, second, other):
        await record_mirrored(store, event)
    now = T0 + timedelta(minutes=1)
    claimed = await store.claim_outbox(
        now, 10, owner=OWNER, lease_seconds=LEASE, kinds=MIRROR_KINDS
    )
    assert {c.message_id for c in claimed} == {first.id, other.id}  # not `second` yet
    done = [OutboxUpdate(c.id, OutboxState.DELIVERED, remote_id="1767") for c in claimed]
    assert await store.update_outbox("openlines", done, now, owner=OWNER) == []
    claimed = await store.claim_outbox(
        now, 10, owner=OWNER, lease_seconds=LEASE, kinds=MIRROR_KINDS
    )
    assert [c.message_id for c in claimed] == [second.id]


async def test_a_waiting_kind_does_not_hold_up_another_of_the_same_conversation(
    store: Store,
) -> None:
    recorded = await record_mirrored(store, chat_event(1))
    assert recorded.receipt.lead_id is not None
    # The mirror row waits (the CRM's chat is down); the reply to the customer goes on.
    reply = await store.queue_message(recorded.receipt.lead_id, "Ответ", author="crm:27", now=T0)
    later = T0 + timedelta(minutes=1)
    (mirror,) = await store.claim_outbox(
        later, 10, owner=OWNER, lease_seconds=LEASE, kinds=MIRROR_KINDS
    )
    assert mirror.kind is OutboxKind.MESSAGE_MIRROR
    claimed = await store.claim_outbox(
        later, 10, owner="message-worker", lease_seconds=LEASE, kinds=(OutboxKind.MESSAGE_OUT,)
    )
    assert [c.message_id for c in claimed] == [reply.id]


async def test_retrying_a_dead_mirror_row_leaves_the_line_alone(store: Store) -> None:
    event = chat_event(1)
    await record_mirrored(store, event)
    now = T0 + timedelta(minutes=1)
    (row,) = await store.claim_outbox(now, 10, owner=OWNER, lease_seconds=LEASE, kinds=MIRROR)
    dead = [OutboxUpdate(row.id, OutboxState.DEAD, error="ERROR_ARGUMENT")]
    assert await store.update_outbox("openlines", dead, now, owner=OWNER) == []
    assert await store.retry_outbox([row.id], now) == 1
    view = await store.get_message(event.id)
    assert view is not None
    assert view.message.status is MessageStatus.RECEIVED
    (again,) = await rows(store, OutboxKind.MESSAGE_MIRROR)
    assert again.state is OutboxState.PENDING
