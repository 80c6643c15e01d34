"""Weekly working windows ("mon" -> ["10:00-19:00"]), shared by calendar and seller schedules."""

from __future__ import annotations

from datetime import time
from itertools import pairwise
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_window(text: str) -> tuple[time, time]:
    """'10:00-19:00' -> (10:00, 19:00). '24:00' as an end means midnight at the day's end."""
    try:
        start_s, end_s = (part.strip() for part in text.replace("–", "-").split("-"))
        start = time.fromisoformat(start_s)
        end = time.max if end_s == "24:00" else time.fromisoformat(end_s)
    except ValueError as exc:
        raise ValueError(f"expected 'HH:MM-HH:MM', got {text!r}") from exc
    if start.tzinfo is not None or end.tzinfo is not None:
        raise ValueError(f"window {text!r}: give local times without an offset")
    if end <= start:
        raise ValueError(f"window {text!r} ends before it starts")
    return start, end


def _check_windows(windows: list[str]) -> list[str]:
    parsed = sorted(parse_window(w) for w in windows)
    for (_, end), (start, _) in pairwise(parsed):
        if start < end:
            raise ValueError(f"windows overlap: {windows!r}")
    return windows


Windows = Annotated[list[str], AfterValidator(_check_windows)]


def _known_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone {value!r}") from exc
    return value


TimeZoneName = Annotated[str, AfterValidator(_known_zone)]
"""An IANA zone name ("Europe/Moscow"), checked when the config is read."""


class WeeklyHours(BaseModel):
    """Open windows per weekday; a day left out is closed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mon: Windows = []
    tue: Windows = []
    wed: Windows = []
    thu: Windows = []
    fri: Windows = []
    sat: Windows = []
    sun: Windows = []

    def is_empty(self) -> bool:
        return not any(getattr(self, day) for day in DAYS)

    def windows(self, weekday: int) -> list[tuple[time, time]]:
        """Parsed windows for date.weekday() (0 = Monday), sorted."""
        day: list[str] = getattr(self, DAYS[weekday])
        return sorted(parse_window(w) for w in day)


OFFICE_HOURS = WeeklyHours(
    mon=["10:00-19:00"],
    tue=["10:00-19:00"],
    wed=["10:00-19:00"],
    thu=["10:00-19:00"],
    fri=["10:00-19:00"],
)
