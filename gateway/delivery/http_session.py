"""The one aiohttp session a sink talks through: opened on first use, closed with the sink;
how a sink reads the CRM's Retry-After; and whether a failed request may have arrived."""

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


def request_may_have_arrived(exc: BaseException) -> bool:
    """Whether a request that failed with `exc` (or what it wraps, as `__cause__`) may still
    have reached the server and been acted on: it went out and the answer was lost (a
    timeout, the connection dropped). False only when it provably never left: no
    connection could be made. A sender without the vendor's idempotency must not repeat a
    request for which this is True."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
            return False
        if isinstance(current, TimeoutError | aiohttp.ClientError | OSError):
            return True
        current = current.__cause__
    return True
