"""Store contract, assignment: the store resolves the plan's request with its round-robin
counts of the day, inside its atomic write, and moves a count only for a write that lands.
Store protocol only."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest

from gateway.assign import Assignment
from gateway.models import Outcome
from gateway.store.base import Recorded, Store, StoreUnavailable

from .conftest import Harness
from .contract import T0, make_event, record, rr

DAY = T0.date()
SELLERS = ("anna", "boris", "vera")


async def test_the_store_spreads_new_leads_evenly(store: Store) -> None:
    events = [make_event(f"n{n}", phone=f"+7903{n:07d}") for n in range(30)]
    results = await asyncio.gather(*(record(store, e, assignment=rr(*SELLERS)) for e in events))
    chosen = Counter(r.assignment.seller_id for r in results if r.assignment)
    assert chosen == {"anna": 10, "boris": 10, "vera": 10}
    assert await store.assignment_counts(DAY) == {"anna": 10, "boris": 10, "vera": 10}
    # What the store says it stored is what it stored.
    for r in results:
        lead = await store.get_lead(r.receipt.lead_id or "")
        assert lead is not None
        assert r.assignment is not None
        assert (lead.assigned_to, lead.assignment_reason) == (
            r.assignment.seller_id,
            r.assignment.reason,
        )


async def test_equal_counts_rotate_in_candidate_order(store: Store) -> None:
    picks = []
    for n in range(7):
        r = await record(store, make_event(f"o{n}", phone=f"+7903{n:07d}"), assignment=rr(*SELLERS))
        assert r.assignment is not None
        picks.append(r.assignment.seller_id)
    assert picks == ["anna", "boris", "vera"] * 2 + ["anna"]


async def test_the_fewest_of_the_day_goes_first(store: Store) -> None:
    for n in range(3):  # anna gets three as the only one on duty
        await record(store, make_event(f"a{n}", phone=f"+7903{n:07d}"), assignment=rr("anna"))
    picks = []
    for n in range(3, 9):
        r = await record(
            store, make_event(f"b{n}", phone=f"+7903{n:07d}"), assignment=rr("anna", "boris")
        )
        assert r.assignment is not None
        picks.append(r.assignment.seller_id)
    assert picks[:3] == ["boris"] * 3  # boris catches up first
    assert Counter(picks[3:]) == {"anna": 2, "boris": 1} or Counter(picks[3:]) == {
        "anna": 1,
        "boris": 2,
    }
    counts = await store.assignment_counts(DAY)
    assert abs(counts["anna"] - counts["boris"]) <= 1


async def test_sticky_owner_wins_and_counts(store: Store) -> None:
    r = await record(
        store, make_event("s1", phone="+79030000001"), assignment=rr(*SELLERS, sticky_owner="vera")
    )
    assert r.assignment == Assignment("vera", "sticky: previous seller")
    # Even when vera is not among the candidates (off duty): she owns the person.
    r = await record(
        store, make_event("s2", phone="+79030000002"), assignment=rr("anna", sticky_owner="vera")
    )
    assert r.assignment == Assignment("vera", "sticky: previous seller")
    assert await store.assignment_counts(DAY) == {"vera": 2}
    lead = await store.get_lead(r.receipt.lead_id or "")
    assert lead is not None
    assert (lead.assigned_to, lead.assignment_reason) == ("vera", "sticky: previous seller")


async def test_no_candidates_stores_an_unassigned_lead_with_the_reason(store: Store) -> None:
    r = await record(store, make_event("u1", phone="+79030000001"), assignment=rr())
    assert r.receipt.outcome is Outcome.CREATED
    assert r.assignment == Assignment(None, "no active sellers configured")
    lead = await store.get_lead(r.receipt.lead_id or "")
    assert lead is not None
    assert (lead.assigned_to, lead.assignment_reason) == (None, "no active sellers configured")
    assert await store.assignment_counts(DAY) == {}


async def test_only_a_created_lead_moves_a_count(store: Store) -> None:
    phone = "+79161234567"
    first = await record(store, make_event("m1", phone=phone), assignment=rr(*SELLERS))
    assert first.assignment == Assignment("anna", "round_robin")
    # A merge, a replay, a kept contact and a junk lead assign nobody and count nothing.
    merged = await record(store, make_event("m2", phone=phone), assignment=rr(*SELLERS))
    replay = await record(store, make_event("m1", phone=phone), assignment=rr(*SELLERS))
    kept = await record(
        store,
        make_event("k1", phone="+79030000009", creates_lead=False),
        assignment=rr(*SELLERS),
    )
    junk = await record(
        store, make_event("j1", phone="+79030000008"), junk=True, assignment=rr(*SELLERS)
    )
    assert [r.receipt.outcome for r in (merged, replay, kept, junk)] == [
        Outcome.MERGED,
        Outcome.REPLAYED,
        Outcome.KEPT,
        Outcome.CREATED,
    ]
    assert [r.assignment for r in (merged, replay, kept, junk)] == [None] * 4
    assert await store.assignment_counts(DAY) == {"anna": 1}


async def test_counts_are_per_day(store: Store) -> None:
    for n in range(4):
        await record(store, make_event(f"d{n}", phone=f"+7903{n:07d}"), assignment=rr("anna"))
    tomorrow = T0 + timedelta(days=1)
    r = await record(
        store,
        make_event("next-day", phone="+79039999999", at=tomorrow),
        assignment=rr("anna", "boris", at=tomorrow),
    )
    # A new day starts afresh: anna's four yesterday do not send tomorrow's leads to boris.
    assert await store.assignment_counts(tomorrow.date()) == {
        r.assignment.seller_id: 1  # type: ignore[union-attr]
    }
    second = await record(
        store,
        make_event("next-day-2", phone="+79039999998", at=tomorrow),
        assignment=rr("anna", "boris", at=tomorrow),
    )
    assert {r.assignment, second.assignment} == {
        Assignment("anna", "round_robin"),
        Assignment("boris", "round_robin"),
    }


async def test_a_late_event_counts_in_the_day_in_progress(store: Store) -> None:
    await record(store, make_event("t1", phone="+79030000001"), assignment=rr("anna", "boris"))
    yesterday = T0 - timedelta(days=1)
    late = await record(
        store,
        make_event("old-mail", phone="+79030000002", at=yesterday),
        assignment=rr("anna", "boris", at=yesterday),
    )
    # Worked "yesterday" by its own clock, but it must not reset today's counts.
    assert late.assignment == Assignment("boris", "round_robin")
    assert await store.assignment_counts(DAY) == {"anna": 1, "boris": 1}


async def test_one_lead_a_day_still_alternates(store: Store) -> None:
    """The turn carries over from day to day (the running total of assignments)."""
    picks = []
    for d in range(4):
        at = T0 + timedelta(days=d)
        r = await record(
            store,
            make_event(f"day{d}", phone=f"+7903{d:07d}", at=at),
            assignment=rr("anna", "boris", at=at),
        )
        assert r.assignment is not None
        picks.append(r.assignment.seller_id)
    assert picks == ["anna", "boris", "anna", "boris"]


async def test_a_restart_keeps_the_day_even_and_the_turn(harness: Harness) -> None:
    for n in range(4):
        await record(
            harness.store, make_event(f"r{n}", phone=f"+7903{n:07d}"), assignment=rr(*SELLERS)
        )
    store = await harness.reopen()
    later = T0 + timedelta(hours=1)
    picks = []
    for n in range(4, 8):
        r = await record(
            store,
            make_event(f"r{n}", phone=f"+7903{n:07d}", at=later),
            assignment=rr(*SELLERS, at=later),
        )
        assert r.assignment is not None
        picks.append(r.assignment.seller_id)
    # Before the restart: anna, boris, vera, anna. After it, as if it never happened.
    assert picks == ["boris", "vera", "anna", "boris"]
    assert await store.assignment_counts(DAY) == {"anna": 3, "boris": 3, "vera": 2}


async def test_after_a_restart_an_old_mail_counts_in_today(harness: Harness) -> None:
    """The first lead after opening starts the day it was received, not the (older) day it
    will be worked: today's counts must not look like yesterday's."""
    for n in range(2):
        await record(
            harness.store, make_event(f"t{n}", phone=f"+7903{n:07d}"), assignment=rr("anna")
        )
    store = await harness.reopen()
    old = T0 - timedelta(days=3)
    late = await record(
        store,
        make_event("old-mail", phone="+79039999999", at=old, received_at=T0 + timedelta(hours=1)),
        assignment=rr("anna", "boris", at=old),
    )
    assert late.assignment == Assignment("boris", "round_robin")
    assert await store.assignment_counts(DAY) == {"anna": 2, "boris": 1}


async def test_the_day_a_lead_counted_in_is_kept_with_it_across_a_restart(
    harness: Harness,
) -> None:
    """Leads that came after hours count in the day they will be worked (the next opening,
    days away); after a restart they must count there again, not by when they came."""
    monday = T0 + timedelta(days=3)
    for n in range(2):  # anna alone is on duty then
        await record(
            harness.store,
            make_event(f"w{n}", phone=f"+7903{n:07d}"),
            assignment=rr("anna", at=monday),
        )
    assert await harness.store.assignment_counts(monday.date()) == {"anna": 2}
    store = await harness.reopen()
    r = await record(
        store,
        make_event("w2", phone="+79039999999", received_at=T0 + timedelta(hours=1)),
        assignment=rr("anna", "boris", at=monday),
    )
    assert r.assignment == Assignment("boris", "round_robin")  # the fewest on Monday
    assert await store.assignment_counts(monday.date()) == {"anna": 2, "boris": 1}


async def test_a_failed_write_leaves_the_counts_unmoved(harness: Harness) -> None:
    store = harness.store
    first = await record(
        store, make_event("f1", phone="+79030000001"), assignment=rr("anna", "boris")
    )
    assert first.assignment == Assignment("anna", "round_robin")
    await harness.fail_writes_of("doomed")
    with pytest.raises(StoreUnavailable):
        await record(
            store, make_event("doomed", phone="+79030000002"), assignment=rr("anna", "boris")
        )
    assert await store.assignment_counts(DAY) == {"anna": 1}
    # The next lead gets the turn the failed one would have had.
    nxt = await record(
        store, make_event("f2", phone="+79030000003"), assignment=rr("anna", "boris")
    )
    assert nxt.assignment == Assignment("boris", "round_robin")
    await harness.heal()
    retry = await record(
        store, make_event("doomed", phone="+79030000002"), assignment=rr("anna", "boris")
    )
    assert retry.receipt.outcome is Outcome.CREATED
    assert retry.assignment == Assignment("anna", "round_robin")
    assert await store.assignment_counts(DAY) == {"anna": 2, "boris": 1}


async def test_a_failed_write_in_a_concurrent_burst_leaves_the_counts_true(
    harness: Harness,
) -> None:
    store = harness.store
    await harness.fail_writes_of("b7")
    results: list[object] = []
    for burst in (range(6), range(6, 12)):
        events = [make_event(f"b{n}", phone=f"+7903{n:07d}") for n in burst]
        results += await asyncio.gather(
            *(record(store, e, assignment=rr(*SELLERS)) for e in events), return_exceptions=True
        )
    failed = [r for r in results if isinstance(r, BaseException)]
    assert failed and all(isinstance(r, StoreUnavailable) for r in failed)
    stored: Counter[str] = Counter()
    for r in results:
        if isinstance(r, Recorded):
            lead = await store.get_lead(r.receipt.lead_id or "")
            assert lead is not None and lead.assigned_to is not None
            stored[lead.assigned_to] += 1
    assert sum(stored.values()) >= 6  # the first burst at least
    # The counts are exactly the leads that were stored, whatever failed with the bad one.
    assert await store.assignment_counts(DAY) == dict(stored)
