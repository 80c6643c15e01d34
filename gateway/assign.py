"""Which first-line seller gets a lead: on duty at the time it will be worked, spread evenly.

The roster lives in memory and is consulted synchronously on the request path, so choose()
is a single pass over the sellers. Counts survive restarts only through seed().
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.hours import DAYS, WeeklyHours

if TYPE_CHECKING:
    from datetime import datetime

    from gateway.calendar import BusinessCalendar


class SellerSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    name: str
    crm_user_id: int | None = None  # Bitrix24 user id for ASSIGNED_BY_ID
    active: bool = True
    schedule: WeeklyHours | None = None  # personal hours; None = company hours
    extension: str | None = None  # PBX extension for sticky call routing


class AssignmentSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: Literal["round_robin", "in_order"] = "round_robin"
    # A returning person goes to their previous seller while that seller is active.
    sticky: bool = True


@dataclass(frozen=True, slots=True)
class Assignment:
    seller_id: str | None
    reason: str


REASON_STICKY = "sticky: previous seller"
REASON_NEXT_ON_DUTY = "next on duty"
REASON_NO_SELLERS = "no active sellers configured"
REASON_NO_HOURS = "no active seller has working hours"


def _has_hours(hours: WeeklyHours) -> bool:
    return any(getattr(hours, day) for day in DAYS)


class Roster:
    """The first line: who is a candidate at a given moment, and whose turn it is."""

    def __init__(
        self,
        sellers: Sequence[SellerSettings],
        settings: AssignmentSettings,
        calendar: BusinessCalendar,
    ) -> None:
        self._sellers = tuple(sellers)
        self._settings = settings
        self._index: dict[str, int] = {}
        for i, seller in enumerate(self._sellers):
            if seller.id in self._index:
                # Sticky owners, seeded counts and CRM ownership are all keyed by id.
                raise ValueError(f"duplicate seller id {seller.id!r}")
            self._index[seller.id] = i
        # with_hours() may build holiday tables; do it once, not per lead.
        self._calendars = tuple(
            calendar if s.schedule is None else calendar.with_hours(s.schedule)
            for s in self._sellers
        )
        # A seller with an empty personal schedule never opens; asking next_open() for them
        # would be meaningless (or never terminate, depending on the calendar).
        self._on_roster = tuple(
            s.active and (s.schedule is None or _has_hours(s.schedule)) for s in self._sellers
        )
        self._any_active = any(s.active for s in self._sellers)
        self._counts = [0] * len(self._sellers)
        self._tz = calendar.tz
        # Counts are per working day: all-time counts would hand a part-timer every lead of
        # their day to catch up with full-timers. The day only moves forward: a late event
        # (an old mail) must not reset the count of the day in progress.
        self._day: date | None = None
        self._last = -1  # roster position of the last strategy pick; ties rotate after it

    def seller(self, seller_id: str) -> SellerSettings | None:
        i = self._index.get(seller_id)
        return None if i is None else self._sellers[i]

    def seed(self, counts: Mapping[str, int], day: date | None = None) -> None:
        """Replace the per-seller counts (leads already assigned, e.g. from the store) of
        `day` (the calendar's local date); the first lead of a later day starts from zero.

        Sellers missing from `counts` start at 0 and unknown ids are ignored (former staff).
        Round robin favours the lowest count, so a seller seeded far below the others gets
        every lead until they catch up: seed with a recent window (today's leads), not all time.
        """
        fresh = [0] * len(self._sellers)
        for seller_id, count in counts.items():
            if count < 0:
                raise ValueError(f"negative count for seller {seller_id!r}")
            i = self._index.get(seller_id)
            if i is not None:
                fresh[i] = count
        self._counts = fresh
        self._day = day

    def counts(self) -> dict[str, int]:
        """Assignments per seller so far (seeded + chosen), for ops and tests."""
        return {s.id: self._counts[i] for i, s in enumerate(self._sellers)}

    def problems(self) -> list[str]:
        if not self._sellers:
            return ["no sellers configured"]
        if not self._any_active:
            return ["no active sellers"]
        if not any(self._on_roster):
            return ["no active seller has working hours"]
        return []

    def choose(self, at: datetime, previous_owner: str | None = None) -> Assignment:
        """The seller who should get a lead worked at `at` (now, or the next opening)."""
        if not self._any_active:
            return Assignment(None, REASON_NO_SELLERS)
        day = at.astimezone(self._tz).date()
        if self._day is None:
            self._day = day  # counts seeded without a day belong to the first lead's day
        elif day > self._day:
            self._counts = [0] * len(self._sellers)
            self._day = day

        if self._settings.sticky and previous_owner is not None:
            owner = self._index.get(previous_owner)
            # The previous seller keeps the customer even when off duty right now: they own the
            # relationship and the CRM history, and a reply next morning from the same person
            # beats a stranger answering within the hour. Inactive (left, on leave) breaks it.
            if owner is not None and self._sellers[owner].active:
                self._counts[owner] += 1
                return Assignment(self._sellers[owner].id, REASON_STICKY)

        candidates = [
            i for i, cal in enumerate(self._calendars) if self._on_roster[i] and cal.is_open(at)
        ]
        reason: str = self._settings.strategy
        if not candidates:
            candidates = self._earliest_on_duty(at)
            reason = REASON_NEXT_ON_DUTY
            if not candidates:
                return Assignment(None, REASON_NO_HOURS)

        chosen = self._pick(candidates)
        self._counts[chosen] += 1
        self._last = chosen
        return Assignment(self._sellers[chosen].id, reason)

    def _earliest_on_duty(self, at: datetime) -> list[int]:
        """Active sellers whose next duty starts first (several when shifts start together)."""
        best: datetime | None = None
        earliest: list[int] = []
        for i, cal in enumerate(self._calendars):
            if not self._on_roster[i]:
                continue
            try:
                opens = cal.next_open(at)
            except ValueError:  # the calendar found no working time ahead for this seller
                continue
            if best is None or opens < best:
                best, earliest = opens, [i]
            elif opens == best:
                earliest.append(i)
        return earliest

    def _pick(self, candidates: list[int]) -> int:
        """Apply the strategy to candidates given in roster order."""
        if self._settings.strategy == "in_order":
            return candidates[0]
        n = len(self._sellers)
        last = self._last
        counts = self._counts
        # Fewest assignments first; among equals, the first in roster order after the last
        # pick, so equal counts still rotate instead of always favouring the top of the list.
        return min(candidates, key=lambda i: (counts[i], (i - last - 1) % n))
