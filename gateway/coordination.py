"""What replicas must agree on, beside the store: leases, counters, token buckets, memos.

The store holds the truth about leads; Coordination holds the short-lived agreements
between the processes that serve them:
- leases: a named job (a mailbox folder, a Telegram long poll, the outbox purge) is run
  by one holder at a time; a holder that dies loses the lease when it expires, and a
  holder that could not renew in time learns it lost the lease before doing more work;
- shared counters with an expiry;
- token buckets: the forms' per-IP limit, our side of the CRM portal's leaky bucket;
- set-if-absent memos with an expiry: "this sender had its auto-reply today".

`InProcessCoordination` is the embedded implementation: one process, so it is exact and
cheap (no await ever waits on anything). A Redis implementation shares the same state
between replicas. Both answer to the same protocol; `tests/coordination/` checks both.

Times: leases and memos expire on the coordinator's clock (monotonic here, the server's
for Redis). Callers pass durations, never instants, so replicas with skewed clocks agree.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar


def process_owner() -> str:
    """A name for this process that is unique across replicas and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class Lease:
    """A held lease. `token` differs on every acquisition: a holder that lost the lease and
    got it back is a new holding, so a stale renew or release from the old one is refused."""

    name: str
    owner: str
    token: str
    ttl: float


class Coordination(Protocol):
    @property
    def owner(self) -> str:
        """This process's name in leases (host:pid:random)."""

    @property
    def shared(self) -> bool:
        """True when other processes see the same state (Redis); False when in-process."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    # --- leases -------------------------------------------------------------------------

    async def acquire(self, name: str, ttl: float) -> Lease | None:
        """Take the lease `name` for `ttl` seconds if nobody holds it (or its holder's time
        ran out); None when someone else holds it."""

    async def renew(self, lease: Lease) -> bool:
        """Extend a held lease by its ttl from now; False when it was lost (expired and
        maybe taken by another): the holder must stop the work it guards."""

    async def release(self, lease: Lease) -> None:
        """Give the lease up at once (a clean shutdown), if still ours."""

    async def holder(self, name: str) -> str | None:
        """Who holds `name` now (for ops), or None."""

    # --- counters, buckets, memos -----------------------------------------------------

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Add to a shared counter and return the new value; `ttl` (re)sets its expiry."""

    async def take(
        self,
        bucket: str,
        capacity: float,
        rate: float,
        cost: float = 1.0,
        *,
        start_empty: bool = False,
    ) -> float:
        """Token bucket: take `cost` tokens if there are enough and return 0.0; otherwise
        take nothing and return the seconds until there will be. A bucket holds at most
        `capacity` and refills at `rate` tokens a second; an unknown (or fully refilled and
        forgotten) bucket starts full, or empty with `start_empty` (after a restart we
        cannot know how much a remote peer's bucket still holds)."""

    async def drain(self, bucket: str, capacity: float, rate: float) -> None:
        """Empty a bucket now: the remote side said we used it all (HTTP 503/429)."""

    async def set_if_absent(self, key: str, value: str, ttl: float) -> bool:
        """Store `value` under `key` for `ttl` seconds unless the key exists; True if set."""

    async def get(self, key: str) -> str | None: ...

    async def delete(self, key: str) -> None: ...


# --- the embedded implementation ----------------------------------------------------------


_V = TypeVar("_V")


@dataclass(slots=True)
class _Held:
    owner: str
    token: str
    expires: float


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class InProcessCoordination:
    """Coordination for one process: plain dicts, exact, no I/O.

    Bucket and memo maps are bounded (`max_keys` per namespace, the key up to its first
    ":"; least recently used first out), so a flood of distinct clients costs memory up to
    the bound and O(1) per call, and floods only its own namespace: a hundred thousand
    form clients never push out the CRM portal's bucket. Forgetting a bucket only ever
    makes that client's limit start again full, never refuses anyone else.
    """

    def __init__(
        self,
        *,
        owner: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._owner = owner or process_owner()
        self._clock = clock
        self._max_keys = max_keys
        self._leases: dict[str, _Held] = {}
        self._counters: dict[str, tuple[int, float | None]] = {}
        # Past this size the counters are swept for expired ones; it doubles when a sweep
        # frees little, so a map of live counters is not rescanned on every call.
        self._sweep_counters_at = max_keys
        self._buckets: dict[str, OrderedDict[str, _Bucket]] = {}
        self._memos: dict[str, OrderedDict[str, tuple[str, float]]] = {}

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def shared(self) -> bool:
        return False

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # --- leases -------------------------------------------------------------------------

    async def acquire(self, name: str, ttl: float) -> Lease | None:
        now = self._clock()
        held = self._leases.get(name)
        if held is not None and held.expires > now:
            return None
        token = secrets.token_hex(8)
        self._leases[name] = _Held(self._owner, token, now + ttl)
        return Lease(name, self._owner, token, ttl)

    async def renew(self, lease: Lease) -> bool:
        now = self._clock()
        held = self._leases.get(lease.name)
        if held is None or held.token != lease.token or held.expires <= now:
            return False
        held.expires = now + lease.ttl
        return True

    async def release(self, lease: Lease) -> None:
        held = self._leases.get(lease.name)
        if held is not None and held.token == lease.token:
            del self._leases[lease.name]

    async def holder(self, name: str) -> str | None:
        held = self._leases.get(name)
        if held is None or held.expires <= self._clock():
            return None
        return held.owner

    # --- counters -----------------------------------------------------------------------

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        now = self._clock()
        value, expires = self._counters.get(key, (0, None))
        if expires is not None and expires <= now:
            value, expires = 0, None
        value += amount
        self._counters[key] = (value, now + ttl if ttl is not None else expires)
        if len(self._counters) > self._sweep_counters_at:
            self._counters = {k: v for k, v in self._counters.items() if v[1] is None or v[1] > now}
            self._sweep_counters_at = max(self._max_keys, 2 * len(self._counters))
        return value

    # --- token buckets ------------------------------------------------------------------

    async def take(
        self,
        bucket: str,
        capacity: float,
        rate: float,
        cost: float = 1.0,
        *,
        start_empty: bool = False,
    ) -> float:
        if cost > capacity:
            raise ValueError(f"a cost of {cost} never fits a bucket of {capacity}")
        now = self._clock()
        space = self._space(self._buckets, bucket)
        state = space.get(bucket)
        if state is None:
            state = _Bucket(0.0 if start_empty else capacity, now)
            space[bucket] = state
            if len(space) > self._max_keys:
                space.popitem(last=False)
        else:
            state.tokens = min(capacity, state.tokens + (now - state.at) * rate)
            state.at = now
            space.move_to_end(bucket)
        if state.tokens >= cost:
            state.tokens -= cost
            return 0.0
        return (cost - state.tokens) / rate

    async def drain(self, bucket: str, capacity: float, rate: float) -> None:
        space = self._space(self._buckets, bucket)
        space[bucket] = _Bucket(0.0, self._clock())
        space.move_to_end(bucket)
        if len(space) > self._max_keys:
            space.popitem(last=False)

    # --- memos --------------------------------------------------------------------------

    async def set_if_absent(self, key: str, value: str, ttl: float) -> bool:
        now = self._clock()
        space = self._space(self._memos, key)
        current = space.get(key)
        if current is not None and current[1] > now:
            return False
        space[key] = (value, now + ttl)
        space.move_to_end(key)
        if len(space) > self._max_keys:
            # The least recently set goes; with one ttl per namespace that is also the one
            # closest to expiry. O(1): no sweep, whatever the flood.
            space.popitem(last=False)
        return True

    async def get(self, key: str) -> str | None:
        current = self._space(self._memos, key).get(key)
        if current is None or current[1] <= self._clock():
            return None
        return current[0]

    async def delete(self, key: str) -> None:
        self._space(self._memos, key).pop(key, None)
        self._counters.pop(key, None)

    # --- bounds -------------------------------------------------------------------------

    @staticmethod
    def _space(spaces: dict[str, OrderedDict[str, _V]], key: str) -> OrderedDict[str, _V]:
        namespace = key.partition(":")[0]
        space = spaces.get(namespace)
        if space is None:
            space = spaces[namespace] = OrderedDict()
        return space

    def size(self, namespace: str) -> int:
        """Buckets plus memos kept under a namespace (for tests and ops)."""
        return len(self._buckets.get(namespace, ())) + len(self._memos.get(namespace, ()))
