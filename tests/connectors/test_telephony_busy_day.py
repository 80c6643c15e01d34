"""A busy day (and a quieter day after) replayed through the Zadarma webhook.

1,200 calls from a few hundred numbers, generated with a seeded random.Random: repeat
callers inside and outside the dedup window, missed calls of every kind, after-hours
calls, blocked numbers, outgoing call-backs, recordings, and ~5% of webhooks delivered
twice. Every webhook is delivered at its own moment (the connector's clock is set to it),
interleaved across calls as a PBX would send them. A small independent model of the rules
(one call = one attempt; an attempt joins the person's open lead, else makes one; outgoing
never makes one; blocked numbers make JUNK leads; facts follow their call) predicts every
count, and the store and the metrics must agree exactly.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import make_settings
from test_telephony_support import (
    count,
    rows,
    sellers,
    send,
    set_clock,
    telephony_config,
    zadarma_request,
)

from gateway.keys import METRICS
from gateway.web import create_app

MSK = ZoneInfo("Europe/Moscow")
SEED = 20250311
LINE = "74951234567"
WINDOW = timedelta(days=1)
EXTENSIONS = {"101": "anna", "102": "boris"}
# (day, calls): a busy Tuesday and, two days later (outside the dedup window), a quieter day.
DAYS = [(datetime(2025, 3, 11, tzinfo=MSK), 1000), (datetime(2025, 3, 13, tzinfo=MSK), 200)]


@dataclass
class Delivery:
    at: datetime
    order: int  # tie-break: the PBX's own order of a call's events
    form: dict[str, str]
    duplicate: bool = False

    @property
    def event(self) -> str:
        return self.form["event"]


@dataclass
class Plan:
    calls: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    missed: int = 0
    answered_by: Counter[str] = field(default_factory=Counter)
    after_hours: int = 0
    blocked: set[str] = field(default_factory=set)  # E.164


def in_hours(at: datetime) -> bool:
    local = at.astimezone(MSK)
    return local.weekday() < 5 and 10 <= local.hour < 19


def generate() -> Plan:
    rng = random.Random(SEED)
    numbers = sorted({f"916{rng.randrange(10**7):07d}" for _ in range(400)})[:320]
    blocked = set(rng.sample(numbers, 6))
    regulars = rng.sample(numbers, 40)  # people who call again and again
    plan = Plan(blocked={"+7" + n for n in blocked})
    seq = 0
    for day, n_calls in DAYS:
        for _ in range(n_calls):
            seq += 1
            plan.calls += 1
            start = day + timedelta(seconds=rng.randrange(8 * 3600, 21 * 3600 + 1800))
            stamp = start.strftime("%Y-%m-%d %H:%M:%S")
            number = rng.choice(regulars) if rng.random() < 0.35 else rng.choice(numbers)
            events: list[tuple[float, dict[str, str]]] = []
            if rng.random() < 0.15:
                pbx = f"out_{seq:06d}_{rng.getrandbits(64):016x}"
                ext = rng.choice(list(EXTENSIONS))
                dest = ("8" if rng.random() < 0.5 else "7") + number
                base = {
                    "call_start": stamp,
                    "pbx_call_id": pbx,
                    "internal": ext,
                    "destination": dest,
                }
                answered = rng.random() < 0.6
                talk = rng.randrange(10, 600) if answered else 0
                ring = rng.randrange(5, 40)
                events.append((0, {"event": "NOTIFY_OUT_START", **base}))
                rec = f"{int(start.timestamp())}.{seq}"
                recorded = answered and rng.random() < 0.5
                end = {
                    "event": "NOTIFY_OUT_END",
                    **base,
                    "caller_id": LINE,
                    "duration": str(talk),
                    "disposition": "answered" if answered else "no answer",
                    "status_code": "16",
                    "is_recorded": "1" if recorded else "0",
                    "call_id_with_rec": rec if recorded else "",
                }
                events.append((ring + talk, end))
                if recorded:
                    events.append(
                        (
                            ring + talk + 40,
                            {"event": "NOTIFY_RECORD", "pbx_call_id": pbx, "call_id_with_rec": rec},
                        )
                    )
            else:
                pbx = f"in_{seq:06d}_{rng.getrandbits(64):016x}"
                base = {
                    "call_start": stamp,
                    "pbx_call_id": pbx,
                    "caller_id": "7" + number,
                    "called_did": LINE,
                }
                events.append((0, {"event": "NOTIFY_START", **base}))
                ext = rng.choice(list(EXTENSIONS))
                if number in blocked:
                    outcome = "blocked"
                elif not in_hours(start):
                    outcome = "after_hours"
                    plan.after_hours += 1
                else:
                    outcome = rng.choices(
                        ["answered", "no answer", "busy", "cancel", "ivr"], [55, 15, 10, 8, 12]
                    )[0]
                ring = rng.randrange(3, 45)
                talk = rng.randrange(15, 900) if outcome == "answered" else 0
                end = {
                    **base,
                    "event": "NOTIFY_END",
                    "status_code": "16",
                    "is_recorded": "0",
                    "call_id_with_rec": "",
                }
                if outcome in ("answered", "no answer", "busy", "cancel"):
                    events.append((2, {"event": "NOTIFY_INTERNAL", **base, "internal": ext}))
                if outcome == "answered":
                    answer = {
                        "event": "NOTIFY_ANSWER",
                        "call_start": stamp,
                        "pbx_call_id": pbx,
                        "caller_id": "7" + number,
                        "destination": ext,
                        "internal": ext,
                    }
                    events.append((ring, answer))
                    # Most END notifications name the extension; some leave it to the ANSWER.
                    if rng.random() < 0.7:
                        end["internal"] = ext
                    end.update(duration=str(talk), disposition="answered")
                    plan.answered_by[EXTENSIONS[ext]] += 1
                    if rng.random() < 0.5:
                        rec = f"{int(start.timestamp())}.{seq}"
                        end.update(is_recorded="1", call_id_with_rec=rec)
                        events.append(
                            (
                                ring + talk + 40,
                                {
                                    "event": "NOTIFY_RECORD",
                                    "pbx_call_id": pbx,
                                    "call_id_with_rec": rec,
                                },
                            )
                        )
                else:
                    plan.missed += 1
                    word = {
                        "blocked": "busy",
                        "after_hours": "answered",  # the autoresponder answered
                        "ivr": "answered",  # the IVR answered, the caller left
                    }.get(outcome, outcome)
                    end.update(duration=str(rng.randrange(0, 30)), disposition=word)
                events.append((ring + talk + 1, end))
            for order, (offset, form) in enumerate(events):
                at = start + timedelta(seconds=offset)
                plan.deliveries.append(Delivery(at, seq * 10 + order, form))
                if rng.random() < 0.05:  # the provider retries: the same webhook again
                    plan.deliveries.append(
                        Delivery(at + timedelta(seconds=2), seq * 10 + order, form, True)
                    )
    plan.deliveries.sort(key=lambda d: (d.at, d.order, d.duplicate))
    return plan


@dataclass
class Lead:
    junk: bool
    last: datetime
    attempts: int = 0


class Model:
    """The rules, stated independently of the gateway's code."""

    def __init__(self, blocked: set[str]) -> None:
        self.blocked = blocked
        self.leads: list[Lead] = []
        self.by_phone: dict[str, list[int]] = {}
        self.call_lead: dict[str, int | None] = {}  # call id -> lead index (None: kept)
        self.outcomes: Counter[str] = Counter()  # of call events: created/merged/kept
        self.facts: Counter[str] = Counter()  # of fact events: merged/kept
        self.replays = 0
        self.seen: set[tuple[str, str]] = set()

    def open_lead(self, phone: str, at: datetime) -> int | None:
        mine = [i for i in self.by_phone.get(phone, []) if not self.leads[i].junk]
        if not mine:
            return None
        best = max(mine, key=lambda i: self.leads[i].last)
        return best if self.leads[best].last >= at - WINDOW else None

    def attempt(self, call_id: str, phone: str, inbound: bool, at: datetime) -> None:
        if phone in self.blocked:
            if inbound:
                self.leads.append(Lead(junk=True, last=at, attempts=1))
                self.by_phone.setdefault(phone, []).append(len(self.leads) - 1)
                self.call_lead[call_id] = len(self.leads) - 1
                self.outcomes["created"] += 1
            else:
                self.call_lead[call_id] = None
                self.outcomes["kept"] += 1
            return
        found = self.open_lead(phone, at)
        if found is not None:
            lead = self.leads[found]
            lead.last, lead.attempts = max(lead.last, at), lead.attempts + 1
            self.call_lead[call_id] = found
            self.outcomes["merged"] += 1
        elif inbound:
            self.leads.append(Lead(junk=False, last=at, attempts=1))
            self.by_phone.setdefault(phone, []).append(len(self.leads) - 1)
            self.call_lead[call_id] = len(self.leads) - 1
            self.outcomes["created"] += 1
        else:
            self.call_lead[call_id] = None
            self.outcomes["kept"] += 1

    def fact(self, call_id: str, at: datetime) -> None:
        index = self.call_lead.get(call_id)
        if index is None:
            self.facts["kept"] += 1
            return
        self.leads[index].last = max(self.leads[index].last, at)
        self.facts["merged"] += 1

    def deliver(self, d: Delivery) -> None:
        form = d.form
        call_id = form["pbx_call_id"]
        event = d.event
        call_start = datetime.strptime(
            form.get("call_start", "2000-01-01 00:00:00"), "%Y-%m-%d %H:%M:%S"
        ).replace(tzinfo=MSK)
        if event in (
            "NOTIFY_START",
            "NOTIFY_OUT_START",
            "NOTIFY_INTERNAL",
            "NOTIFY_ANSWER",
            "NOTIFY_END",
            "NOTIFY_OUT_END",
        ):
            if ("call", call_id) in self.seen:
                self.replays += 1
            else:
                self.seen.add(("call", call_id))
                inbound = not event.startswith("NOTIFY_OUT")
                phone = "+7" + (form["caller_id"] if inbound else form["destination"])[-10:]
                self.attempt(call_id, phone, inbound, call_start)
        if event in ("NOTIFY_END", "NOTIFY_OUT_END", "NOTIFY_RECORD"):
            key = ("fact", f"{call_id}:{event == 'NOTIFY_RECORD'}")
            if key in self.seen:
                self.replays += 1
            else:
                self.seen.add(key)
                self.fact(call_id, d.at if event == "NOTIFY_RECORD" else call_start)


@pytest.mark.slow
async def test_busy_day_counts_are_exact(aiohttp_client: Any, tmp_path: Path) -> None:
    plan = generate()
    assert plan.calls >= 1000 and len(plan.deliveries) > 3 * plan.calls
    numbers = {
        d.form.get("caller_id", d.form.get("destination", ""))[-10:] for d in plan.deliveries
    }
    numbers.discard("")
    assert 200 <= len(numbers) <= 400
    blocked = plan.blocked

    settings = make_settings(
        tmp_path,
        telephony=telephony_config(after_hours_ivr="AH1"),
        sellers=sellers(),
        dedup={"window_days": 1},
        screen={"blocked_phones": sorted(blocked)},
    )
    client = await aiohttp_client(create_app(settings))
    model = Model(blocked)
    steered: Counter[str] = Counter()
    for d in plan.deliveries:
        set_clock(client, lambda at=d.at: at)
        status, body = await send(client, "zadarma", zadarma_request(d.form))
        assert status == 200, (d.form, body)
        model.deliver(d)
        if d.event == "NOTIFY_START" and not d.duplicate:
            steered[next(iter(body), "none")] += 1

    stored = await rows(tmp_path / "leadgate.db")
    calls = [r for r in stored if r.meta["kind"] == "call"]
    facts = [r for r in stored if r.meta["kind"] != "call"]
    # One call, one attempt: exactly one call event per call, whatever was repeated.
    assert len(calls) == plan.calls
    assert Counter(r.outcome for r in calls) == model.outcomes
    assert Counter(r.outcome for r in facts) == model.facts
    new_leads = sum(1 for lead in model.leads if not lead.junk)
    junk_leads = sum(1 for lead in model.leads if lead.junk)
    assert new_leads > 300 and junk_leads > 0 and model.outcomes["merged"] > 300
    assert model.outcomes["kept"] > 0 and model.facts["kept"] > 0

    db = tmp_path / "leadgate.db"
    assert await count(db, "leads:NEW") == new_leads
    assert await count(db, "leads:JUNK") == junk_leads
    # Every lead carries exactly the attempts the model gave it.
    per_lead = Counter(r.lead_id for r in calls if r.lead_id is not None)
    assert sorted(per_lead.values()) == sorted(lead.attempts for lead in model.leads)
    # Facts sit on their own call's lead.
    lead_of_call = {r.meta["call_id"]: r.lead_id for r in calls}
    assert all(r.lead_id == lead_of_call[r.meta["call_id"]] for r in facts)

    results = [r for r in facts if r.meta["kind"] == "call_result" and r.meta["direction"] == "in"]
    assert sum(1 for r in results if r.meta["missed"]) == plan.missed
    assert Counter(r.meta["answered_by"] for r in results if r.meta["answered"]) == plan.answered_by
    assert steered["ivr_play"] == plan.after_hours
    assert steered["redirect"] == sum(
        1
        for d in plan.deliveries
        if d.event == "NOTIFY_START"
        and not d.duplicate
        and "+7" + d.form["caller_id"][-10:] in blocked
    )

    registry = client.app[METRICS].registry

    def events(outcome: str) -> float:
        return (
            registry.get_sample_value(
                "leadgate_events_total", {"channel": "phone", "outcome": outcome}
            )
            or 0.0
        )

    assert events("created") == model.outcomes["created"]
    assert events("merged") == model.outcomes["merged"] + model.facts["merged"]
    assert events("kept") == model.outcomes["kept"] + model.facts["kept"]
    assert events("replayed") == model.replays
