"""Names of the people who write, asked of the Graph API once and remembered for a while.

Messenger: `GET /{PSID}?fields=first_name,last_name` with the Page token (User Profile API);
Instagram: `GET /{IGSID}?fields=name,username`. Meta gives them only where the app may ask
(the permission, the person's settings): a refusal is remembered too, so a person whose name
is not given is not asked about on every message, and a permission the app lacks stops the
asking for that account for a while. A name is a convenience: no failure here stops a
message from becoming a lead, and no slow Graph holds one up — the lookup is given
`timeout_seconds`, and an account whose lookup timed out or failed for a passing reason
(Graph slow or down) is not asked again for FAILED_SECONDS, so the messages after it go
on at once, without names.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from connectors.meta.graph import ErrorKind, GraphError

log = logging.getLogger(__name__)

# An account whose token may not read profiles is left alone this long.
REFUSED_SECONDS = 3600.0
# A failure that may pass (rate limit, Meta's hiccup) is not retried for this long.
FAILED_SECONDS = 300.0

Fetch = Callable[[], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class _Known:
    name: str | None
    until: float


class NameCache:
    """At most `size` people, each for `ttl_seconds`; least recently used go first."""

    def __init__(
        self,
        size: int,
        ttl_seconds: float,
        timeout_seconds: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size = size
        self.ttl = ttl_seconds
        self.timeout = timeout_seconds
        self.clock = clock
        self._known: OrderedDict[tuple[str, str], _Known] = OrderedDict()
        self._refused: dict[str, float] = {}  # account -> until when it is not asked
        self._unreachable: dict[str, float] = {}  # account -> until when Graph is let be

    def __len__(self) -> int:
        return len(self._known)

    def refused(self, account: str) -> bool:
        return self._refused.get(account, 0.0) > self.clock()

    async def name(self, account: str, person: str, fetch: Fetch) -> tuple[str | None, str]:
        """(the name or None, what happened: cached | fetched | refused | failed | timeout |
        off)."""
        key = (account, person)
        now = self.clock()
        known = self._known.get(key)
        if known is not None and known.until > now:
            self._known.move_to_end(key)
            return known.name, "cached"
        if self.refused(account):
            return None, "refused"
        if self._unreachable.get(account, 0.0) > now:
            return None, "failed"
        try:
            name = await asyncio.wait_for(fetch(), self.timeout)
        except TimeoutError:
            self._unreachable[account] = now + FAILED_SECONDS
            log.info(
                "meta %s: no name within %g s; names are not asked for %g s",
                account,
                self.timeout,
                FAILED_SECONDS,
            )
            return None, "timeout"
        except GraphError as exc:
            if exc.kind in (ErrorKind.PERMISSION, ErrorKind.AUTH):
                # Not this person: the account may not read profiles at all.
                self._refused[account] = now + REFUSED_SECONDS
                log.info("meta %s: names are not given (%s); not asked for an hour", account, exc)
                return None, "refused"
            if exc.kind in (ErrorKind.TRANSIENT, ErrorKind.RATE_LIMIT):
                # Graph itself is unwell: the next person would wait for nothing too.
                self._unreachable[account] = now + FAILED_SECONDS
            self._remember(key, None, now + FAILED_SECONDS)
            return None, "failed"
        self._remember(key, name, now + self.ttl)
        return name, "fetched"

    def _remember(self, key: tuple[str, str], name: str | None, until: float) -> None:
        if self.size <= 0:
            return
        self._known[key] = _Known(name, until)
        self._known.move_to_end(key)
        while len(self._known) > self.size:
            self._known.popitem(last=False)


def profile_name(profile: dict[str, object]) -> str | None:
    """The name in a profile answer: Messenger's first/last name, Instagram's name or
    @username."""
    parts = [p for k in ("first_name", "last_name") if isinstance(p := profile.get(k), str) and p]
    if parts:
        return " ".join(parts)
    name = profile.get("name")
    if isinstance(name, str) and name.strip():
        return name.strip()
    username = profile.get("username")
    if isinstance(username, str) and username.strip():
        return f"@{username.strip()}"
    return None
