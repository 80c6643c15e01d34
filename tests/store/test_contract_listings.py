"""The reads the CLI and the tests rely on, run against every implementation: events in
the order stored (kept ones too) with their raw payloads, the Idempotency-Key lookup,
quarantine and checkpoint listings. The implementations are the outbox suite's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.models import Channel, Contact, LeadEvent, Outcome
from gateway.store.base import EventQuery, Quarantined
from tests.store.test_contract_outbox import IMPLEMENTATIONS, T0, Harness, order


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
async def reads_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in IMPLEMENTATIONS[request.param](tmp_path):
        yield harness


def outgoing_call(n: int) -> LeadEvent:
    """Someone we called who has no open lead: stored, kept on no lead."""
    return LeadEvent(
        channel=Channel.PHONE,
        external_id=f"call-{n}",
        occurred_at=T0,
        received_at=T0,
        contact=Contact(phones=("+79035550000",)),
        creates_lead=False,
    )


async def test_events_are_listed_in_the_order_stored_with_raw_and_kept_ones(
    reads_store: Harness,
) -> None:
    h = reads_store
    first = await h.accept(order(1).model_copy(update={"raw": {"order_id": "o-1", "x": [1]}}))
    kept = await h.accept(outgoing_call(1))
    merged = await h.accept(order(2, phone="+79160000001", at=T0 + timedelta(seconds=1)))
    assert kept.outcome is Outcome.KEPT and merged.outcome is Outcome.MERGED
    events = await h.store.list_events(EventQuery())
    assert [e.record.id for e in events] == [first.event_id, kept.event_id, merged.event_id]
    assert [e.lead_id for e in events] == [first.lead_id, None, first.lead_id]
    assert [e.record.outcome for e in events] == [Outcome.CREATED, Outcome.KEPT, Outcome.MERGED]
    assert events[0].raw == {"order_id": "o-1", "x": [1]}
    assert events[2].record.matched_on == "phone"

    page = await h.store.list_events(EventQuery(limit=2))
    rest = await h.store.list_events(EventQuery(after_id=page[-1].record.id))
    assert [e.record.id for e in page + rest] == [e.record.id for e in events]
    by_channel = await h.store.list_events(EventQuery(channel=Channel.PHONE))
    assert [e.record.id for e in by_channel] == [kept.event_id]
    by_sender = await h.store.list_events(EventQuery(channel=Channel.ORDERS, external_id="o-2"))
    assert [e.record.id for e in by_sender] == [merged.event_id]
    on_lead = await h.store.list_events(EventQuery(lead_id=first.lead_id))
    assert [e.record.id for e in on_lead] == [first.event_id, merged.event_id]

    one = await h.store.get_event(kept.event_id)
    assert one is not None and one.record.channel is Channel.PHONE and one.lead_id is None
    assert await h.store.get_event("no-such-event") is None


async def test_the_idempotency_key_names_the_event_first_stored_under_it(
    reads_store: Harness,
) -> None:
    h = reads_store
    event = order(1).model_copy(update={"idempotency_key": "form:site:abc"})
    receipt = await h.accept(event)
    again = await h.accept(order(2).model_copy(update={"idempotency_key": "form:site:abc"}))
    assert again.outcome is Outcome.REPLAYED
    found = await h.store.event_for_key("form:site:abc")
    assert found is not None and found.record.id == receipt.event_id
    assert found.lead_id == receipt.lead_id
    assert await h.store.event_for_key("form:site:other") is None
    # The sender's own id is a different namespace.
    assert await h.store.event_for_key("o-1") is None


async def test_quarantine_and_checkpoints_are_listed(reads_store: Harness) -> None:
    h = reads_store
    assert await h.store.list_quarantine() == []
    assert await h.store.list_checkpoints() == {}
    await h.writer.quarantine(Quarantined("email", "malformed", b"\xff\x00", {"mailbox": "a"}))
    await h.writer.quarantine(Quarantined("phone", "bad json", b"{", {}), ("cti:pos", "7"))
    await h.writer.save_checkpoint("email:sales:INBOX", "v1")
    await h.writer.save_checkpoint("email:sales:Spam", "v2")
    kept = await h.store.list_quarantine()
    assert [(q.channel, q.reason, q.body, q.headers) for q in kept] == [
        ("email", "malformed", b"\xff\x00", {"mailbox": "a"}),
        ("phone", "bad json", b"{", {}),
    ]
    assert kept[0].id < kept[1].id and kept[0].received_at.tzinfo is not None
    assert [q.reason for q in await h.store.list_quarantine("phone")] == ["bad json"]
    assert await h.store.list_quarantine(after_id=kept[0].id) == kept[1:]
    assert await h.store.list_quarantine(limit=1) == kept[:1]
    assert await h.store.list_checkpoints("email:") == {
        "email:sales:INBOX": "v1",
        "email:sales:Spam": "v2",
    }
    assert await h.store.list_checkpoints() == {
        "cti:pos": "7",
        "email:sales:INBOX": "v1",
        "email:sales:Spam": "v2",
    }
    assert await h.store.list_checkpoints("email:sales:I") == {"email:sales:INBOX": "v1"}
    assert await h.store.list_checkpoints("%") == {}  # a name is matched as text
