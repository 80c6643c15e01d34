"""Business calendar: production-calendar days off + weekly windows -> open/closed, next open, SLA.

Called on every request of the hot path, so per-day facts are computed once and cached;
the per-request work is a timezone conversion, one cache lookup and a few integer compares.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import holidays
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from gateway.hours import OFFICE_HOURS, TimeZoneName, WeeklyHours
from gateway.models import Channel

WEEKDAYS_RU = ("понедельник", "вторник", "среда", "четверг", "пятница", "суббота", "воскресенье")
SEARCH_DAYS = 366
_US_PER_DAY = 86_400_000_000
_US_PER_MINUTE = 60_000_000
_MIDNIGHT = time()

# A window in microseconds since local midnight; integers keep the hot path cheap and
# let a "24:00" end meet the next day's "00:00" start without a gap.
_Window = tuple[int, int]
_DayWindows = tuple[_Window, ...]


class CalendarSettings(BaseModel):
    """The `[calendar]` config section."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: TimeZoneName = "Europe/Moscow"
    country: str = "RU"
    subdivision: str | None = None
    hours: WeeklyHours = OFFICE_HOURS
    extra_holidays: dict[date, str] = {}
    extra_workdays: list[date] = []
    channels: dict[str, WeeklyHours] = {}
    reaction_minutes: int = 15

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, value: dict[str, WeeklyHours]) -> dict[str, WeeklyHours]:
        # A misspelt channel would silently fall back to the default hours.
        known = {c.value for c in Channel}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown channel(s) {unknown}; expected one of {sorted(known)}")
        empty = sorted(name for name, week in value.items() if week.is_empty())
        if empty:
            raise ValueError(f"channel(s) {empty} have no working hours on any day")
        return value

    @field_validator("hours")
    @classmethod
    def _some_hours(cls, value: WeeklyHours) -> WeeklyHours:
        # With no working time no SLA can be computed: refuse it here, not at a request.
        if value.is_empty():
            raise ValueError("no working hours on any day")
        return value

    @field_validator("reaction_minutes")
    @classmethod
    def _non_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("reaction_minutes must be >= 0")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CalendarSettings:
        try:
            holidays.country_holidays(self.country, subdiv=self.subdivision)
        except NotImplementedError as exc:
            raise ValueError(str(exc)) from exc
        both = sorted(set(self.extra_holidays) & set(self.extra_workdays))
        if both:
            raise ValueError(f"dates both in extra_holidays and extra_workdays: {both}")
        return self


@dataclass(frozen=True, slots=True)
class Classification:
    after_hours: bool
    reason: str | None
    next_open_at: datetime | None
    sla_due_at: datetime


def _to_windows(hours: WeeklyHours) -> tuple[_DayWindows, ...]:
    def us(t: time) -> int:
        if t == time.max:
            return _US_PER_DAY
        return ((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000 + t.microsecond

    return tuple(tuple((us(s), us(e)) for s, e in hours.windows(wd)) for wd in range(7))


def _offset(local: datetime) -> int:
    return ((local.hour * 60 + local.minute) * 60 + local.second) * 1_000_000 + local.microsecond


def _fmt_offset(us: int) -> str:
    minutes = us // _US_PER_MINUTE
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


class _DayBook:
    """Which days are off and why; shared by every calendar derived via with_hours()."""

    def __init__(self, settings: CalendarSettings) -> None:
        # Built once per calendar (with_hours clones share it); years load on first lookup.
        self._official: Any = holidays.country_holidays(
            settings.country, subdiv=settings.subdivision, language="ru"
        )
        self.weekend: frozenset[int] = frozenset(self._official.weekend)
        self._extra_holidays = dict(settings.extra_holidays)
        self._extra_workdays = frozenset(settings.extra_workdays)
        self.facts: Callable[[date], tuple[str | None, bool]] = lru_cache(maxsize=4096)(self._facts)

    def _facts(self, day: date) -> tuple[str | None, bool]:
        """(why the day is off or None, whether that reason is a holiday)."""
        if day in self._extra_workdays:
            return None, False
        if day in self._extra_holidays:
            return f"holiday: {self._extra_holidays[day]}", True
        name: str | None = self._official.get(day)  # also loads day.year, incl. its workdays
        if name is not None:
            return f"holiday: {name}", True
        if day.weekday() in self.weekend and day not in self._official.weekend_workdays:
            return f"weekend: {WEEKDAYS_RU[day.weekday()]}", False
        return None, False


class BusinessCalendar:
    def __init__(self, settings: CalendarSettings) -> None:
        self._settings = settings
        self._tz = ZoneInfo(settings.timezone)
        self._days = _DayBook(settings)
        self._set_hours(settings)

    def _set_hours(self, settings: CalendarSettings) -> None:
        self._default = _to_windows(settings.hours)
        self._by_channel = {name: _to_windows(h) for name, h in settings.channels.items()}
        self._windows_of: Callable[[date, str | None], _DayWindows] = lru_cache(maxsize=8192)(
            self._day_windows
        )

    @property
    def tz(self) -> ZoneInfo:
        return self._tz

    @property
    def settings(self) -> CalendarSettings:
        return self._settings

    def with_hours(self, hours: WeeklyHours) -> BusinessCalendar:
        """Same tz and days off, other weekly windows; channel overrides are dropped because a
        personal schedule already is the whole truth about when that person works."""
        clone = copy.copy(self)
        clone._settings = self._settings.model_copy(update={"hours": hours, "channels": {}})
        clone._set_hours(clone._settings)
        return clone

    def day_off_reason(self, day: date) -> str | None:
        return self._days.facts(day)[0]

    def _day_windows(self, day: date, channel: str | None) -> _DayWindows:
        off, holiday = self._days.facts(day)
        if holiday:
            return ()
        week = self._by_channel.get(channel, self._default) if channel else self._default
        windows = week[day.weekday()]
        # An ordinary weekend keeps the schedule's own hours for it (whoever configured
        # Saturday hours wants to work Saturdays); only holidays close unconditionally.
        # A transferred working Saturday works like a weekday, yet the schedule usually has
        # no Saturday hours: borrow the first weekday that has some.
        if not windows and off is None and day.weekday() in self._days.weekend:
            windows = next((w for w in week if w), ())
        return windows

    def _local(self, at: datetime) -> datetime:
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"naive datetime {at.isoformat()} — pass a timezone-aware one")
        return at.astimezone(self._tz)

    def _walk(
        self, local: datetime, minutes: int, channel: str | None
    ) -> tuple[datetime, datetime]:
        """(first open moment >= local, `local` + `minutes` of business time)."""
        if minutes < 0:
            raise ValueError("minutes must be >= 0")
        remaining = minutes * _US_PER_MINUTE
        cursor = _offset(local)
        day = local.date()
        first: datetime | None = None
        idle_days = 0
        while idle_days <= SEARCH_DAYS:
            found = False
            for start, end in self._windows_of(day, channel):
                if cursor >= end:
                    continue
                found = True
                begin = max(cursor, start)
                if first is None:
                    # `local` itself only on its own day: on later days cursor is midnight,
                    # and a window opening at 00:00 would otherwise look like "open now".
                    same = day == local.date() and begin == cursor
                    first = local if same else self._at(day, begin)
                if remaining <= end - begin:
                    return first, self._at(day, begin + remaining)
                remaining -= end - begin
            idle_days = 0 if found else idle_days + 1
            day += timedelta(days=1)
            cursor = 0
        raise ValueError(f"calendar has no working time in the next {SEARCH_DAYS} days")

    def _at(self, day: date, offset_us: int) -> datetime:
        # Wall-clock arithmetic: business hours are local clock times, even across DST.
        return datetime.combine(day, _MIDNIGHT, self._tz) + timedelta(microseconds=offset_us)

    def is_open(self, at: datetime, channel: str | None = None) -> bool:
        local = self._local(at)
        cursor = _offset(local)
        return any(s <= cursor < e for s, e in self._windows_of(local.date(), channel))

    def open_until(self, at: datetime, channel: str | None = None) -> datetime | None:
        """End of the window `at` falls in; None when closed."""
        local = self._local(at)
        cursor = _offset(local)
        for start, end in self._windows_of(local.date(), channel):
            if start <= cursor < end:
                return self._at(local.date(), end)
        return None

    def next_open(self, at: datetime, channel: str | None = None) -> datetime:
        return self._walk(self._local(at), 0, channel)[0]

    def add_business_minutes(
        self, at: datetime, minutes: int, channel: str | None = None
    ) -> datetime:
        return self._walk(self._local(at), minutes, channel)[1]

    def classify(self, at: datetime, channel: str | None = None) -> Classification:
        local = self._local(at)
        first, due = self._walk(local, self._settings.reaction_minutes, channel)
        if first == local:
            return Classification(False, None, None, due)
        return Classification(True, self._closed_reason(local, channel), first, due)

    def _closed_reason(self, local: datetime, channel: str | None) -> str:
        day = local.date()
        off, holiday = self._days.facts(day)
        windows = self._windows_of(day, channel)
        if off is not None and (holiday or not windows):
            return off
        if not windows:
            return f"outside hours: нерабочий день по графику ({WEEKDAYS_RU[day.weekday()]})"
        shown = ", ".join(f"{_fmt_offset(s)}–{_fmt_offset(e)}" for s, e in windows)
        return f"outside hours: {shown}"
