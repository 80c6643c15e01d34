"""Which first-line seller gets a lead: on duty at the time it will be worked, spread evenly.

Split in two so a decision is data (DESIGN "Decisions are data"): the Roster, from config
alone, says who may get a lead (`request()`: candidates on duty, sticky owner, strategy);
the store resolves that request with its round-robin counts of the day (`pick()`), inside
its atomic write. Both halves are pure, so a store that retries a transaction gets the same
seller again and moves the counts once, when its write lands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, tzinfo
from typing import TYPE_CHECKING, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from gateway.hours import DAYS, WeeklyHours

if TYPE_CHECKING:
    from gateway.calendar import BusinessCalendar

Strategy = Literal["round_robin", "in_order"]


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

    strategy: Strategy = "round_robin"
    # A returning person goes to their previous seller while that seller is active.
    sticky: bool = True


class Assignment(NamedTuple):
    seller_id: str | None
    reason: str


REASON_STICKY = "sticky: previous seller"
REASON_NEXT_ON_DUTY = "next on duty"
REASON_NO_SELLERS = "no active sellers configured"
REASON_NO_HOURS = "no active seller has working hours"


class AssignmentRequest(NamedTuple):
    """Who may get a new lead, decided from config and the calendar; the store picks one.

    Pure data, so any store can resolve it inside its own transaction with `pick()` and the
    counts of `day`, and a retried transaction resolves it the same way.
    """

    # The local working day of the moment the lead will be worked: the counts that decide.
    day: date
    # The calendar's time zone, whose midnight starts `day` (see day_start).
    tz: tzinfo
    # Seller ids in roster order: on duty at that moment, else the earliest on duty.
    candidates: tuple[str, ...]
    strategy: Strategy
    # Why a candidate gets it (the strategy, or "next on duty"); with no candidates, why
    # nobody does (no active sellers, nobody with working hours).
    reason: str
    # The person's previous seller: gets the lead whatever the candidates and counts.
    sticky_owner: str | None = None

    @property
    def day_start(self) -> datetime:
        """The day's local midnight: a store starting to count a day counts the leads it has
        stored since then (a restart keeps the day even)."""
        return datetime.combine(self.day, time.min, self.tz)


def pick(request: AssignmentRequest, counts: Mapping[str, int], earlier: int = 0) -> Assignment:
    """Resolve `request` with the round-robin state of its day: `counts` (seller id -> leads
    assigned that day) and `earlier` (leads assigned before that day began).

    Fewest assignments of the day first. Ties rotate by the running total (earlier + the
    day's), not by a hidden "last pick": the same state always gives the same seller,
    whichever replica asks, and a day of one lead does not always start at the top of the
    list (the running total carries the turn from one day to the next).
    """
    if request.sticky_owner is not None:
        return Assignment(request.sticky_owner, REASON_STICKY)
    candidates = request.candidates
    if not candidates:
        return Assignment(None, request.reason)
    if request.strategy == "in_order" or len(candidates) == 1:
        return Assignment(candidates[0], request.reason)
    n = len(candidates)
    start = (earlier + sum(counts.values())) % n
    best, low = candidates[start], counts.get(candidates[start], 0)
    for j in range(1, n):  # from `start` round the list; the first of the fewest wins
        candidate = candidates[(start + j) % n]
        count = counts.get(candidate, 0)
        if count < low:
            best, low = candidate, count
    return Assignment(best, request.reason)


def counting_day(request_day: date, current: date | None) -> date:
    """The day whose counts resolve a request for `request_day`, given the day in progress.

    Counts are per working day: all-time counts would hand a part-timer every lead of their
    day to catch up with full-timers. The day only moves forward: a late event (an old mail
    worked "yesterday") counts in the day in progress instead of resetting it.
    """
    return request_day if current is None or request_day > current else current


def _has_hours(hours: WeeklyHours) -> bool:
    return any(getattr(hours, day) for day in DAYS)


class Roster:
    """The first line from config: who is a candidate at a given moment, who is sticky.

    Holds no counts: those belong to the store (shared by every replica that uses it).
    """

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
                # Sticky owners, counts and CRM ownership are all keyed by id.
                raise ValueError(f"duplicate seller id {seller.id!r}")
            self._index[seller.id] = i
        # A seller with an empty personal schedule never opens; asking next_open() for them
        # would be meaningless (or never terminate, depending on the calendar).
        self._on_roster = tuple(
            s.active and (s.schedule is None or _has_hours(s.schedule)) for s in self._sellers
        )
        # The sellers on the roster grouped by their hours (most share the company's), so a
        # lead asks each distinct calendar once, not each seller; with_hours() may build
        # holiday tables, so that too happens once per schedule, not per lead.
        groups: list[tuple[WeeklyHours | None, list[str]]] = []
        for s, ok in zip(self._sellers, self._on_roster, strict=True):
            if ok:
                same = next((ids for hours, ids in groups if hours == s.schedule), None)
                if same is None:
                    groups.append((s.schedule, [s.id]))
                else:
                    same.append(s.id)
        self._groups: tuple[tuple[BusinessCalendar, tuple[str, ...]], ...] = tuple(
            (calendar if hours is None else calendar.with_hours(hours), tuple(ids))
            for hours, ids in groups
        )
        self._any_active = any(s.active for s in self._sellers)
        # The previous seller keeps the customer even when off duty right now: they own the
        # relationship and the CRM history, and a reply next morning from the same person
        # beats a stranger answering within the hour. Inactive (left, on leave) breaks it.
        self._sticky = frozenset(s.id for s in self._sellers if s.active and settings.sticky)
        self._tz = calendar.tz

    def seller(self, seller_id: str) -> SellerSettings | None:
        i = self._index.get(seller_id)
        return None if i is None else self._sellers[i]

    def problems(self) -> list[str]:
        if not self._sellers:
            return ["no sellers configured"]
        if not self._any_active:
            return ["no active sellers"]
        if not any(self._on_roster):
            return ["no active seller has working hours"]
        return []

    def request(self, at: datetime) -> AssignmentRequest:
        """Who may get a lead worked at `at` (now, or the next opening), before anyone knows
        whose lead it is: see `sticky()` for a returning person."""
        tz = self._tz
        day = at.astimezone(tz).date()
        strategy = self._settings.strategy
        if not self._any_active:
            return AssignmentRequest(day, tz, (), strategy, REASON_NO_SELLERS)
        on_duty = self._in_roster_order([ids for cal, ids in self._groups if cal.is_open(at)])
        if on_duty:
            return AssignmentRequest(day, tz, on_duty, strategy, strategy)
        earliest = self._earliest_on_duty(at)
        reason = REASON_NEXT_ON_DUTY if earliest else REASON_NO_HOURS
        return AssignmentRequest(day, tz, earliest, strategy, reason)

    def sticky(self, request: AssignmentRequest, previous_owner: str | None) -> AssignmentRequest:
        """`request` for a person whose most recent real lead was `previous_owner`'s."""
        if previous_owner is None or previous_owner not in self._sticky:
            return request
        return request._replace(sticky_owner=previous_owner)

    def _earliest_on_duty(self, at: datetime) -> tuple[str, ...]:
        """Active sellers whose next duty starts first (several when shifts start together)."""
        best: datetime | None = None
        earliest: list[tuple[str, ...]] = []
        for cal, ids in self._groups:
            try:
                opens = cal.next_open(at)
            except ValueError:  # the calendar found no working time ahead for these sellers
                continue
            if best is None or opens < best:
                best, earliest = opens, [ids]
            elif opens == best:
                earliest.append(ids)
        return self._in_roster_order(earliest)

    def _in_roster_order(self, groups: list[tuple[str, ...]]) -> tuple[str, ...]:
        if len(groups) <= 1:
            return groups[0] if groups else ()
        chosen = {seller for ids in groups for seller in ids}
        return tuple(s.id for s in self._sellers if s.id in chosen)
