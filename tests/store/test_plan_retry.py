"""Decisions are data: a store may plan an event more than once (an optimistic transaction
retried after a conflict) and the outcome must be the same lead, the same seller, one count
and one metric. The real pipeline over every store, with retries forced two ways:

- `Replanning` wraps the store and calls the pipeline's planner again before each decision,
  first with a stale match (as an attempt that lost a race saw the world), then the real one;
- the harness makes the store itself decide each event several times (`redecide`), each
  attempt resolving the round-robin pick again before one is applied.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.metrics import Metrics
from gateway.models import Channel, Contact, LeadEvent, Outcome
from gateway.pipeline import Accepted, Pipeline
from gateway.store.base import PersonMatch, Plan, Planner, Recorded, Store
from gateway.web import make_pipeline

from .conftest import FACTORIES, Harness

MSK = "+03:00"
TUESDAY = datetime.fromisoformat(f"2026-01-13T11:00:00{MSK}")
MORNINGS = {d: ["08:00-11:00"] for d in ("mon", "tue", "wed", "thu", "fri")}


class Replanning:
    """A Store that hands the inner store a planner which runs the pipeline's planner again
    and again (stale match first) and checks every run with the real match agrees."""

    def __init__(self, inner: Store, times: int = 3) -> None:
        self.inner = inner
        self.times = times
        self.plans: list[Plan] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def record(
        self,
        event: LeadEvent,
        keys: Sequence[str],
        since: datetime,
        plan: Planner,
        checkpoint: tuple[str, str] | None = None,
    ) -> Recorded:
        def replan(match: PersonMatch) -> Plan:
            plan(PersonMatch())  # an attempt that saw nobody, then lost its transaction
            plan(PersonMatch(previous_owner="boris"))
            runs = [plan(match) for _ in range(self.times)]
            assert all(r == runs[0] for r in runs), runs
            self.plans.append(runs[0])
            return runs[0]

        return await self.inner.record(event, keys, since, replan, checkpoint)


def event(n: int, at: datetime, phone: str, **kw: Any) -> LeadEvent:
    return LeadEvent(
        channel=kw.pop("channel", Channel.WEBFORM),
        external_id=f"e{n}",
        occurred_at=at,
        received_at=at,
        contact=Contact(name=f"Клиент {n}", phones=(phone,)),
        **kw,
    )


def counter(pipeline: Pipeline, name: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(sorted(s.labels.values())): s.value
        for family in pipeline.metrics.registry.collect()
        for s in family.samples
        if s.name == name
    }


async def test_a_retried_plan_is_one_lead_one_seller_one_count(
    harness: Harness, tmp_path: Path
) -> None:
    harness.redecide(lambda: 3)
    wrapped = Replanning(harness.store)
    pipeline = make_pipeline(make_settings(tmp_path), wrapped, Metrics())
    phone = "+79161234567"
    accepted: list[Accepted] = []
    for n, (at, who) in enumerate(
        [
            (TUESDAY, phone),  # new person: created and assigned
            (TUESDAY + timedelta(minutes=1), "+79030000001"),  # another new person
            (TUESDAY + timedelta(minutes=2), phone),  # the first again: merged
            (TUESDAY + timedelta(minutes=3), "+79030000002"),
        ]
    ):
        accepted.append(await pipeline.accept_detailed(event(n, at, who)))
    junk = await pipeline.accept_detailed(
        event(9, TUESDAY, "+79030000009", junk_reason="honeypot: website")
    )

    created = [a for a in accepted if a.receipt.outcome is Outcome.CREATED]
    assert [a.receipt.outcome for a in accepted] == [
        Outcome.CREATED,
        Outcome.CREATED,
        Outcome.MERGED,
        Outcome.CREATED,
    ]
    # The lead id is the one the planner made once, however often it ran.
    # (The store decided each event 3 times, each time with a replanned planner: one id.)
    planned = [p.lead.id for p in wrapped.plans if p.lead is not None and p.assignment is not None]
    assert len(planned) >= 3 * 3
    assert list(dict.fromkeys(planned)) == [a.receipt.lead_id for a in created]
    # The seller reported is the seller stored; round robin moved once per lead.
    sellers = []
    for a in created:
        lead = await pipeline.store.get_lead(a.receipt.lead_id or "")
        assert lead is not None and a.assignment is not None
        assert (lead.assigned_to, lead.assignment_reason) == (
            a.assignment.seller_id,
            a.assignment.reason,
        )
        sellers.append(lead.assigned_to)
    assert sellers == ["anna", "boris", "anna"]
    assert await pipeline.store.assignment_counts(TUESDAY.date()) == {"anna": 2, "boris": 1}
    assert junk.assignment is None
    # Metrics once per event.
    assert counter(pipeline, "leadgate_events_total") == {
        ("created", "webform"): 4.0,
        ("merged", "webform"): 1.0,
    }
    assert counter(pipeline, "leadgate_junk_leads_total") == {("honeypot",): 1.0}
    assert counter(pipeline, "leadgate_unassigned_leads_total") == {(): 0.0}


async def test_a_retried_plan_counts_an_unassigned_lead_once(
    harness: Harness, tmp_path: Path
) -> None:
    harness.redecide(lambda: 4)
    pipeline = make_pipeline(
        make_settings(tmp_path, sellers=[]),
        Replanning(harness.store),
        Metrics(),
    )
    for n in range(3):
        a = await pipeline.accept_detailed(event(n, TUESDAY, f"+7903000000{n}"))
        assert a.assignment is not None
        assert a.assignment.seller_id is None
    await pipeline.accept_detailed(event(0, TUESDAY, "+79030000000"))  # a replay
    await pipeline.accept_detailed(event(7, TUESDAY, "+79030000000"))  # a merge
    assert counter(pipeline, "leadgate_unassigned_leads_total") == {(): 3.0}


async def test_sticky_survives_retries(harness: Harness, tmp_path: Path) -> None:
    """A returning person after the window goes to their seller, once, even when an earlier
    attempt of the decision saw someone else as the previous owner."""
    harness.redecide(lambda: 2)
    pipeline = make_pipeline(
        make_settings(tmp_path, dedup={"window_days": 30}),
        Replanning(harness.store),
        Metrics(),
    )
    phone = "+79161234567"
    first = await pipeline.accept_detailed(event(1, TUESDAY, phone))
    assert first.assignment is not None and first.assignment.seller_id == "anna"
    later = TUESDAY + timedelta(weeks=9)  # a Tuesday again
    back = await pipeline.accept_detailed(event(2, later, phone))
    assert back.receipt.outcome is Outcome.CREATED
    assert back.assignment is not None
    assert (back.assignment.seller_id, back.assignment.reason) == (
        "anna",
        "sticky: previous seller",
    )
    assert await pipeline.store.assignment_counts(later.date()) == {"anna": 1}


# --- property: retries never change the outcome -----------------------------------------------


@dataclass(frozen=True)
class Step:
    person: int  # the same person comes back: merges, or sticky after the window
    hours: int  # when, from a Monday morning: in hours, after hours, another day
    kind: str  # "form" | "junk" | "outgoing"


steps = st.lists(
    st.builds(
        Step,
        person=st.integers(0, 7),
        hours=st.integers(0, 24 * 9),
        kind=st.sampled_from(["form", "form", "form", "junk", "outgoing"]),
    ),
    min_size=5,
    max_size=30,
)


async def replay_day(
    factory: str, plan: list[Step], chunks: list[int], times: Callable[[], int]
) -> list[tuple[str, int | None, str | None, str | None]]:
    """Run `plan` through the pipeline on a fresh store; what became of each event."""
    start = datetime.fromisoformat(f"2026-01-12T08:00:00{MSK}")
    with tempfile.TemporaryDirectory() as d:
        async with FACTORIES[factory](Path(d)) as harness:
            harness.redecide(times)
            settings_ = make_settings(
                Path(d),
                dedup={"window_days": 2},
                sellers=[
                    {"id": "anna", "name": "Анна"},
                    {"id": "boris", "name": "Борис"},
                    {"id": "vera", "name": "Вера", "schedule": MORNINGS},
                ],
            )
            pipeline = make_pipeline(settings_, harness.store, Metrics())
            events = []
            for n, s in enumerate(sorted(plan, key=lambda s: s.hours)):
                at = start + timedelta(hours=s.hours, minutes=n)
                events.append(
                    event(
                        n,
                        at,
                        f"+7916000{s.person:04d}",
                        junk_reason="honeypot" if s.kind == "junk" else None,
                        creates_lead=s.kind != "outgoing",
                        channel=Channel.PHONE if s.kind == "outgoing" else Channel.WEBFORM,
                    )
                )
            results: list[Accepted] = []
            i = 0
            for size in chunks:
                batch = events[i : i + size]
                results += await asyncio.gather(*(pipeline.accept_detailed(e) for e in batch))
                i += size
            results += [await pipeline.accept_detailed(e) for e in events[i:]]
            # Lead ids differ between runs: name each lead by the event that created it.
            first_event = {
                r.receipt.lead_id: k
                for k, r in reversed(list(enumerate(results)))
                if r.receipt.outcome is Outcome.CREATED
            }
            out = []
            for r in results:
                lead = (
                    await harness.store.get_lead(r.receipt.lead_id or "")
                    if r.receipt.lead_id
                    else None
                )
                out.append(
                    (
                        r.receipt.outcome.value,
                        first_event.get(r.receipt.lead_id),
                        lead.assigned_to if lead else None,
                        r.assignment.seller_id if r.assignment else None,
                    )
                )
                if r.assignment is not None:
                    assert lead is not None and lead.assigned_to == r.assignment.seller_id
            unassigned = pipeline.metrics.registry.get_sample_value(
                "leadgate_unassigned_leads_total"
            )
            out.append(("unassigned", int(unassigned or 0), None, None))
            # The round-robin counts the store holds at the end, for whichever day it counts.
            for day in range(12):
                counts = await harness.store.assignment_counts(start.date() + timedelta(days=day))
                out += [("count", day, seller, str(n)) for seller, n in sorted(counts.items())]
            return out


@pytest.mark.parametrize("factory", sorted(FACTORIES))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=steps, chunks=st.lists(st.integers(1, 6), max_size=8), rng=st.randoms())
def test_retries_never_change_the_outcome(
    factory: str, plan: list[Step], chunks: list[int], rng: random.Random
) -> None:
    once = asyncio.run(replay_day(factory, plan, chunks, lambda: 1))
    retried = asyncio.run(replay_day(factory, plan, chunks, lambda: rng.randint(1, 4)))
    assert retried == once

    # And the assignments they add up to.
    def tally(rows: list[tuple[str, int | None, str | None, str | None]]) -> dict[str, int]:
        out: dict[str, int] = {}
        for outcome, _, _, seller in rows:
            if outcome == "created" and seller is not None:
                out[seller] = out.get(seller, 0) + 1
        return out

    assert tally(retried) == tally(once)


def test_the_generated_days_can_reach_every_outcome() -> None:
    """One fixed plan through the same runner: merges, keeps, junk and sticky all occur, so
    the property above compares more than new leads."""
    plan = [
        Step(0, 2, "form"),  # Monday 10:00
        Step(0, 3, "form"),  # merged
        Step(1, 4, "junk"),
        Step(2, 5, "outgoing"),  # kept: nobody to join
        Step(0, 80, "form"),  # Thursday, after the 2-day window: a new lead, sticky
        Step(3, 14, "form"),  # Monday 22:00: for Tuesday's opening
    ]
    rows = asyncio.run(replay_day("sqlite", plan, [2, 2], lambda: 2))
    by_hours = dict(zip([2, 3, 4, 5, 14, 80], rows[:6], strict=True))
    assert {h: r[0] for h, r in by_hours.items()} == {
        2: "created",
        3: "merged",
        4: "created",
        5: "kept",
        14: "created",
        80: "created",
    }
    assert by_hours[80][3] == by_hours[2][3] is not None  # sticky: the same seller
    assert by_hours[3][1] == 0  # merged into the lead of the first event
    assert by_hours[4][3] is None  # junk: nobody
    assert ("unassigned", 0, None, None) in rows
