"""Round-robin state of the day in progress, for a store that keeps it in its own memory.

The embedded store is the only writer of its file, so its memory is the one truth for the
counts; it moves them at decision time (when the lead enters its overlay) and takes a
count back when that write fails, so the counts always equal the leads it will have stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime, time

from gateway.assign import Assignment, AssignmentRequest, pick

# What a day starts from, given its local midnight: leads per seller counted in that day,
# and the number of leads counted before it (the running total that carries the turn).
Seeder = Callable[[datetime], tuple[Mapping[str, int], int]]


class DayCounts:
    def __init__(self) -> None:
        self.day: date | None = None
        self._counts: dict[str, int] = {}
        self._earlier = 0

    def resolve(
        self,
        request: AssignmentRequest,
        seed: Seeder,
        received_at: datetime,
        latest: Callable[[], date | None] = lambda: None,
    ) -> tuple[Assignment, date]:
        """The seller for `request` and the day it counts in; moves no count (see add()).

        The first request after opening starts the day in progress — the request's day, the
        day the event was received if that is later (an old mail must not make today look
        like yesterday), or the latest day a stored lead counted in (`latest`: after-hours
        leads count in the next opening, and the day never goes back) — from `seed`, the
        leads stored with that day: a restart keeps the day even and the turn where it was.
        A later day starts from zero with the turn carried over, as counting_day() says.
        Starting the same day again gives the same state, so resolving twice (a retry) is
        harmless.
        """
        day = self.day
        if day is None:
            day = max(request.day, received_at.astimezone(request.tz).date())
            stored = latest()
            if stored is not None and stored > day:
                day = stored
            counts, earlier = seed(datetime.combine(day, time.min, request.tz))
            if earlier < 0 or any(v < 0 for v in counts.values()):
                raise ValueError(f"negative assignment counts for {day}")
            self._counts = {k: v for k, v in counts.items() if v > 0}
            self._earlier = earlier
            self.day = day
        elif request.day > day:  # counting_day(), inline: this runs per lead
            day = self.day = request.day
            self._earlier += sum(self._counts.values())
            self._counts = {}
        return pick(request, self._counts, self._earlier), day

    def add(self, day: date, seller_id: str) -> None:
        if day == self.day:
            self._counts[seller_id] = self._counts.get(seller_id, 0) + 1

    def remove(self, day: date, seller_id: str) -> None:
        """Take back a count whose write failed (a later day has its own counts already)."""
        left = self._counts.get(seller_id, 0) - 1 if day == self.day else -1
        if left > 0:
            self._counts[seller_id] = left
        elif left == 0:
            del self._counts[seller_id]

    def of(self, day: date) -> dict[str, int]:
        return dict(self._counts) if day == self.day else {}
