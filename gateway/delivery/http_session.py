"""The one aiohttp session a sink talks through: opened on first use, closed with the sink;
and how a sink reads the CRM's Retry-After."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp

# The longest wait a CRM can ask for: an hour. "Retry-After: inf" (or 1e308, or nan) would
# otherwise overflow the worker's date arithmetic or park delivery for good.
MAX_RETRY_AFTER = 3600.0


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now, within 0..MAX_RETRY_AFTER; None when absent or
    unreadable. Both of RFC 9110's forms: delay-seconds and an HTTP date."""
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


class LazySession:
    def __init__(self, timeout_seconds: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def get(self) -> aiohttp.ClientSession:
        # Created inside the running loop (aiohttp binds a session to it), not at import.
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
