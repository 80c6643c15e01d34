from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta

import pytest
from pydantic import ValidationError

from gateway.assign import Assignment, AssignmentSettings, Roster, SellerSettings
from gateway.hours import OFFICE_HOURS, WeeklyHours


class FakeCalendar:
    """Weekly windows in UTC, no holidays: just enough of BusinessCalendar for the roster."""

    tz = UTC

    def __init__(self, hours: WeeklyHours = OFFICE_HOURS) -> None:
        self.hours = hours

    def is_open(self, at: datetime, channel: str | None = None) -> bool:
        at = at.astimezone(UTC)
        return any(s <= at.time() < e for s, e in self.hours.windows(at.weekday()))

    def next_open(self, at: datetime, channel: str | None = None) -> datetime:
        at = at.astimezone(UTC)
        for days in range(15):
            day = (at + timedelta(days=days)).date()
            for start, end in self.hours.windows(day.weekday()):
                opens = datetime.combine(day, start, UTC)
                closes = datetime.combine(day, end, UTC)
                if opens <= at < closes:
                    return at
                if opens > at:
                    return opens
        raise ValueError("no working time ahead")

    def with_hours(self, hours: WeeklyHours) -> FakeCalendar:
        return FakeCalendar(hours)


MONDAY_NOON = datetime(2026, 1, 12, 12, 0, tzinfo=UTC)
MONDAY_9 = datetime(2026, 1, 12, 9, 0, tzinfo=UTC)
MONDAY_LATE = datetime(2026, 1, 12, 21, 0, tzinfo=UTC)
SATURDAY = datetime(2026, 1, 17, 12, 0, tzinfo=UTC)
MORNINGS = WeeklyHours(**{d: ["08:00-11:00"] for d in ("mon", "tue", "wed", "thu", "fri")})


def seller(sid: str, **kw: object) -> SellerSettings:
    return SellerSettings(id=sid, name=sid.title(), **kw)  # type: ignore[arg-type]


def roster(
    sellers: list[SellerSettings], strategy: str = "round_robin", sticky: bool = True
) -> Roster:
    settings = AssignmentSettings(strategy=strategy, sticky=sticky)  # type: ignore[arg-type]
    return Roster(sellers, settings, FakeCalendar())  # type: ignore[arg-type]


def test_round_robin_is_even_over_1000_leads() -> None:
    r = roster([seller("anna"), seller("boris"), seller("vera")])
    chosen = Counter(r.choose(MONDAY_NOON).seller_id for _ in range(1000))
    assert set(chosen) == {"anna", "boris", "vera"}
    assert max(chosen.values()) - min(chosen.values()) <= 1
    assert sum(chosen.values()) == 1000


def test_round_robin_rotates_in_roster_order() -> None:
    r = roster([seller("anna"), seller("boris"), seller("vera")])
    picks = [r.choose(MONDAY_NOON) for _ in range(4)]
    assert [a.seller_id for a in picks] == ["anna", "boris", "vera", "anna"]
    assert picks[0] == Assignment("anna", "round_robin")


def test_seed_is_respected() -> None:
    r = roster([seller("anna"), seller("boris"), seller("vera")])
    r.seed({"anna": 5, "boris": 3, "gone": 100})
    picks = [r.choose(MONDAY_NOON).seller_id for _ in range(8)]
    # vera catches up with boris, the two alternate up to anna's 5, then anna's turn comes.
    assert picks == ["vera", "vera", "vera", "boris", "vera", "boris", "vera", "anna"]
    assert r.counts() == {"anna": 6, "boris": 5, "vera": 5}


def test_seed_rejects_negative_counts() -> None:
    r = roster([seller("anna")])
    with pytest.raises(ValueError, match="negative"):
        r.seed({"anna": -1})


def test_in_order_always_takes_the_first_candidate() -> None:
    r = roster([seller("anna"), seller("boris")], strategy="in_order")
    assert {r.choose(MONDAY_NOON).seller_id for _ in range(10)} == {"anna"}
    assert r.choose(MONDAY_NOON).reason == "in_order"


def test_inactive_seller_is_never_chosen() -> None:
    r = roster([seller("anna", active=False), seller("boris"), seller("vera")])
    chosen = {r.choose(MONDAY_NOON).seller_id for _ in range(30)}
    assert chosen == {"boris", "vera"}
    assert {r.choose(MONDAY_LATE).seller_id for _ in range(30)} == {"boris", "vera"}


def test_personal_schedule_only_mornings() -> None:
    r = roster([seller("early", schedule=MORNINGS), seller("regular")])
    # 09:00 only the morning person is on duty (company hours start at 10).
    assert [r.choose(MONDAY_9).seller_id for _ in range(3)] == ["early"] * 3
    # 12:00 the morning shift is over.
    assert [r.choose(MONDAY_NOON).seller_id for _ in range(3)] == ["regular"] * 3


def test_sticky_goes_to_previous_owner_even_off_duty() -> None:
    r = roster([seller("early", schedule=MORNINGS), seller("regular")])
    assert r.choose(MONDAY_NOON, previous_owner="early") == Assignment(
        "early", "sticky: previous seller"
    )
    assert r.counts()["early"] == 1


def test_sticky_ignored_when_owner_inactive_or_unknown() -> None:
    r = roster([seller("anna", active=False), seller("boris")])
    assert r.choose(MONDAY_NOON, previous_owner="anna") == Assignment("boris", "round_robin")
    assert r.choose(MONDAY_NOON, previous_owner="fired") == Assignment("boris", "round_robin")


def test_sticky_disabled() -> None:
    r = roster([seller("anna"), seller("boris")], sticky=False)
    r.seed({"boris": 10})
    assert r.choose(MONDAY_NOON, previous_owner="boris") == Assignment("anna", "round_robin")


def test_nobody_on_duty_goes_to_next_on_duty() -> None:
    r = roster([seller("regular"), seller("early", schedule=MORNINGS)])
    # Monday 21:00: "early" starts Tuesday 08:00, before company hours at 10:00.
    assert r.choose(MONDAY_LATE) == Assignment("early", "next on duty")
    # Saturday: same, Monday 08:00 comes first.
    assert r.choose(SATURDAY) == Assignment("early", "next on duty")


def test_next_on_duty_ties_use_the_strategy() -> None:
    r = roster([seller("anna"), seller("boris")])
    picks = [r.choose(MONDAY_LATE) for _ in range(4)]
    assert [a.seller_id for a in picks] == ["anna", "boris", "anna", "boris"]
    assert {a.reason for a in picks} == {"next on duty"}
    ordered = roster([seller("anna"), seller("boris")], strategy="in_order")
    assert {ordered.choose(MONDAY_LATE).seller_id for _ in range(4)} == {"anna"}


def test_seller_with_empty_schedule_is_skipped() -> None:
    r = roster([seller("never", schedule=WeeklyHours()), seller("anna")])
    assert r.choose(MONDAY_LATE) == Assignment("anna", "next on duty")
    only = roster([seller("never", schedule=WeeklyHours())])
    assert only.choose(MONDAY_NOON) == Assignment(None, "no active seller has working hours")
    assert only.problems() == ["no active seller has working hours"]


def test_no_sellers() -> None:
    r = roster([])
    assert r.choose(MONDAY_NOON) == Assignment(None, "no active sellers configured")
    assert r.problems() == ["no sellers configured"]


def test_no_active_sellers() -> None:
    r = roster([seller("anna", active=False)])
    assert r.choose(MONDAY_NOON, previous_owner="anna") == Assignment(
        None, "no active sellers configured"
    )
    assert r.problems() == ["no active sellers"]
    assert roster([seller("anna")]).problems() == []


def test_seller_lookup_and_validation() -> None:
    anna = seller("anna", crm_user_id=7, extension="101")
    r = roster([anna])
    assert r.seller("anna") is anna
    assert r.seller("nobody") is None
    with pytest.raises(ValueError, match="duplicate"):
        roster([seller("anna"), seller("anna")])
    with pytest.raises(ValidationError):
        SellerSettings(id="", name="x")
    with pytest.raises(ValidationError):
        SellerSettings(id="a", name="x", phone="+7")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        AssignmentSettings(strategy="random")  # type: ignore[arg-type]


def test_fake_calendar_sanity() -> None:
    cal = FakeCalendar()
    assert cal.is_open(MONDAY_NOON) and not cal.is_open(MONDAY_LATE)
    assert cal.next_open(MONDAY_LATE) == datetime(2026, 1, 13, 10, 0, tzinfo=UTC)
    assert cal.with_hours(MORNINGS).next_open(MONDAY_LATE).time() == time(8, 0)


def test_round_robin_counts_start_afresh_each_day() -> None:
    """Found in review: counts since the process started made a Monday-only seller get every
    Monday lead after a week of the full-timer's leads."""
    full = SellerSettings(id="a", name="A")
    mondays = SellerSettings(id="b", name="B", schedule=WeeklyHours(mon=["10:00-19:00"]))
    roster = Roster([full, mondays], AssignmentSettings(), FakeCalendar())
    for day in (11, 12, 13, 14):  # Tue-Fri 2025-03-11..14: only "a" is on duty
        for hour in range(10, 20, 1):
            if hour < 19:
                roster.choose(datetime(2025, 3, day, hour, tzinfo=UTC))
    monday = [roster.choose(datetime(2025, 3, 17, 10, m, tzinfo=UTC)).seller_id for m in range(6)]
    assert monday.count("a") == 3 and monday.count("b") == 3


def test_a_late_event_does_not_reset_the_day_in_progress() -> None:
    a, b = SellerSettings(id="a", name="A"), SellerSettings(id="b", name="B")
    roster = Roster([a, b], AssignmentSettings(), FakeCalendar())
    roster.seed({"a": 5, "b": 0}, date(2025, 3, 12))
    # An old mail worked "yesterday" must not zero today's counts.
    roster.choose(datetime(2025, 3, 11, 12, tzinfo=UTC))
    assert roster.counts()["a"] >= 5
