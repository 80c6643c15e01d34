"""What ops watch and decide, run against every implementation: intake per channel and
bucket, the last event per channel, open-lead counts, and the quarantine's states (get,
mark with an expected state, delete), as the Store protocol's docstrings promise them.
The implementations are the outbox suite's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.models import Channel, Contact, LeadEvent, Outcome
from gateway.store.base import (
    INTAKE_BUCKET_SECONDS,
    IntakeCount,
    OpenLeadStats,
    Quarantined,
    QuarantineState,
)
from tests.store.test_contract_outbox import IMPLEMENTATIONS, T0, Harness, order


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
async def ops_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in IMPLEMENTATIONS[request.param](tmp_path):
        yield harness


def call(n: int, at: datetime, *, creates_lead: bool = True) -> LeadEvent:
    return LeadEvent(
        channel=Channel.PHONE,
        external_id=f"call-{n}",
        occurred_at=at,
        received_at=at,
        contact=Contact(phones=(f"+7903555{n:04d}",)),
        creates_lead=creates_lead,
    )


# --- intake ----------------------------------------------------------------------------------


async def test_intake_counts_stored_events_per_channel_outcome_and_bucket(
    ops_store: Harness,
) -> None:
    h = ops_store
    step = timedelta(seconds=INTAKE_BUCKET_SECONDS)
    await h.accept(order(1, at=T0))
    await h.accept(order(2, at=T0 + timedelta(seconds=10)))
    merged = await h.accept(order(3, phone="+79160000001", at=T0 + timedelta(seconds=20)))
    assert merged.outcome is Outcome.MERGED
    await h.accept(call(1, T0 + step))
    kept = await h.accept(call(2, T0 + step + timedelta(seconds=1), creates_lead=False))
    assert kept.outcome is Outcome.KEPT
    replay = await h.accept(order(1, at=T0))  # a replay stores nothing: not counted
    assert replay.outcome is Outcome.REPLAYED

    counts = await h.store.intake(T0 - timedelta(hours=1))
    assert all(isinstance(c, IntakeCount) for c in counts)
    assert [(c.bucket_start, c.channel, c.outcome, c.count) for c in counts] == [
        (T0, "orders", "created", 2),
        (T0, "orders", "merged", 1),
        (T0 + step, "phone", "created", 1),
        (T0 + step, "phone", "kept", 1),
    ]
    assert all(c.bucket_start.tzinfo is not None for c in counts)
    # `since` is floored to its bucket: a moment inside the second bucket keeps all of it.
    later = await h.store.intake(T0 + step + timedelta(seconds=30))
    assert [(c.channel, c.count) for c in later] == [("phone", 1), ("phone", 1)]
    assert await h.store.intake(T0 + step * 2) == []


async def test_last_event_per_channel(ops_store: Harness) -> None:
    h = ops_store
    assert await h.store.last_event_at() == {}
    await h.accept(order(1, at=T0))
    await h.accept(order(2, at=T0 + timedelta(minutes=7)))
    await h.accept(call(1, T0 + timedelta(seconds=3)))
    last = await h.store.last_event_at()
    assert last == {"orders": T0 + timedelta(minutes=7), "phone": T0 + timedelta(seconds=3)}


# --- open leads ------------------------------------------------------------------------------


async def test_open_lead_stats_count_new_unassigned_and_overdue(ops_store: Harness) -> None:
    h = ops_store
    # The harness has one seller, "anna", working the default hours: 2026-01-12 is a Monday,
    # 08:00 UTC is 11:00 in Moscow, so each lead is due 15 minutes after it came.
    first = await h.accept(order(1, at=T0))
    await h.accept(order(2, at=T0 + timedelta(minutes=30)))
    assert first.lead_id is not None
    stats = await h.store.open_lead_stats(T0 - timedelta(hours=1), T0 + timedelta(minutes=20))
    assert stats == OpenLeadStats(new=2, unassigned=0, overdue=1)
    later = await h.store.open_lead_stats(T0 - timedelta(hours=1), T0 + timedelta(hours=2))
    assert later.overdue == 2
    # The window: only leads created at or after `since`.
    window = await h.store.open_lead_stats(T0 + timedelta(minutes=1), T0 + timedelta(hours=2))
    assert window == OpenLeadStats(new=1, unassigned=0, overdue=1)


# --- quarantine ------------------------------------------------------------------------------


async def test_quarantine_entries_move_between_states(ops_store: Harness) -> None:
    h = ops_store
    await h.writer.quarantine(Quarantined("email", "malformed", b"\xff", {"mailbox": "a"}))
    await h.writer.quarantine(Quarantined("phone", "cti: no call id", b"{}", {}))
    first, second = await h.store.list_quarantine()
    assert first.state is QuarantineState.KEPT and first.note is None
    assert first.updated_at is None

    got = await h.store.get_quarantine(first.id)
    assert got == first and got.body == b"\xff"
    assert await h.store.get_quarantine(10_000) is None

    at = datetime(2026, 1, 12, 9, 0, tzinfo=UTC)
    assert await h.store.mark_quarantine(first.id, QuarantineState.RELEASE, "asked", at)
    asked = await h.store.get_quarantine(first.id)
    assert asked is not None and asked.state is QuarantineState.RELEASE
    assert asked.note == "asked" and asked.updated_at == at
    requested = await h.store.list_quarantine(state=QuarantineState.RELEASE)
    assert [e.id for e in requested] == [first.id]

    # With `expect`, only from that state: the gateway's answer cannot undo a new request.
    later = at + timedelta(seconds=5)
    assert not await h.store.mark_quarantine(
        second.id, QuarantineState.RELEASED, "x", later, expect=QuarantineState.RELEASE
    )
    assert (await h.store.get_quarantine(second.id)).state is QuarantineState.KEPT  # type: ignore[union-attr]
    assert await h.store.mark_quarantine(
        first.id, QuarantineState.RELEASED, "run again: event E", later,
        expect=QuarantineState.RELEASE,
    )  # fmt: skip
    done = await h.store.get_quarantine(first.id)
    assert done is not None and done.state is QuarantineState.RELEASED
    assert done.note == "run again: event E" and done.updated_at == later
    assert await h.store.list_quarantine(state=QuarantineState.RELEASE) == []
    assert [e.id for e in await h.store.list_quarantine(state=QuarantineState.KEPT)] == [second.id]

    assert await h.store.delete_quarantine(second.id)
    assert not await h.store.delete_quarantine(second.id)
    assert not await h.store.mark_quarantine(second.id, QuarantineState.RELEASE, None, later)
    assert [e.id for e in await h.store.list_quarantine()] == [first.id]
