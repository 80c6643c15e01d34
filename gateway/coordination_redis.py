"""Coordination on Redis: what several replicas agree on, on one server (gateway.coordination).

Every key is `<prefix>co:<kind>:<name>`, so the store's keys (same prefix) never meet ours
and several gateways can share a server. Everything that reads and then writes is one Lua
script, atomic on the server; times are the server's (`PX` expiries, `TIME` in the
scripts), so replicas with skewed clocks agree:
- a lease is a string "<token> <owner>" set with `SET NX PX`; renew and release compare
  the whole value first, so only the holding that set it can extend or drop it;
- a token bucket is a hash {tokens, at}; a take refills it for the time since `at` on the
  server's clock, so N replicas taking together never get more than the budget. A bucket
  is forgotten a minute after it would be full again (an unknown bucket starts full, or
  empty with `start_empty`, as the protocol says);
- counters are INCRBY (+PEXPIRE when a ttl is given) in one MULTI; memos are `SET NX PX`.

A server that does not answer (down, failing over, too slow for `[store] timeout_seconds`)
raises CoordinationUnavailable, a StoreUnavailable: a request waiting on it is answered
503 ("retry"), as when the store itself cannot write.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.coordination import Lease, process_owner
from gateway.store.base import StoreUnavailable

_T = TypeVar("_T")

# A refilled bucket is kept this much longer than it needs to fill: a client back within a
# minute finds its bucket, and a flood of one-off clients costs Redis memory for a minute.
BUCKET_GRACE_MS = 60_000

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1] bucket; ARGV capacity, rate, cost, start_empty ("1"/"0"), grace ms.
# Returns the seconds to wait as a string (a Lua number would come back truncated).
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens
if not state[1] then
  if ARGV[4] == '1' then tokens = 0 else tokens = capacity end
else
  local elapsed = math.max(0, now - tonumber(state[2]))
  tokens = math.min(capacity, tonumber(state[1]) + elapsed * rate)
end
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'at', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + tonumber(ARGV[5]))
return string.format('%.17g', wait)
"""

# KEYS[1] bucket; ARGV capacity, rate, grace ms.
_DRAIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('HSET', KEYS[1], 'tokens', '0', 'at', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) / tonumber(ARGV[2]) * 1000)
           + tonumber(ARGV[3]))
return 1
"""


class CoordinationUnavailable(StoreUnavailable):
    """Redis did not answer a coordination call; nothing was decided or taken."""


def _ms(seconds: float) -> int:
    """A duration for PX/PEXPIRE: whole milliseconds, at least one (0 is an error there)."""
    return max(1, math.ceil(seconds * 1000))


class RedisCoordination:
    """Coordination shared by every replica on one Redis (or Sentinel group).

    Owns `client` (from gateway.redisconn.connect, replies decoded): `close` closes it.
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str, owner: str | None = None) -> None:
        self._client = client
        self._base = f"{prefix}co:"
        self._owner = owner or process_owner()
        # Scripts run by EVALSHA, loaded again by redis-py if the server lost them (a
        # restart, a promoted replica).
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._take = client.register_script(_TAKE)
        self._drain = client.register_script(_DRAIN)

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def shared(self) -> bool:
        return True

    async def open(self) -> None:
        return None  # connections are made on first use; the startup check pings first

    async def close(self) -> None:
        await self._client.aclose()

    def _key(self, kind: str, name: str) -> str:
        return f"{self._base}{kind}:{name}"

    async def _call(self, what: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await what()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise CoordinationUnavailable(f"Redis did not answer: {exc}") from exc

    # --- leases -------------------------------------------------------------------------

    async def acquire(self, name: str, ttl: float) -> Lease | None:
        token = secrets.token_hex(8)
        key = self._key("lease", name)
        done = await self._call(
            lambda: self._client.set(key, f"{token} {self._owner}", nx=True, px=_ms(ttl))
        )
        return Lease(name, self._owner, token, ttl) if done else None

    async def renew(self, lease: Lease) -> bool:
        key = self._key("lease", lease.name)
        held = f"{lease.token} {lease.owner}"
        done = await self._call(lambda: self._renew(keys=[key], args=[held, _ms(lease.ttl)]))
        return bool(done)

    async def release(self, lease: Lease) -> None:
        key = self._key("lease", lease.name)
        held = f"{lease.token} {lease.owner}"
        await self._call(lambda: self._release(keys=[key], args=[held]))

    async def holder(self, name: str) -> str | None:
        value = await self._call(lambda: self._client.get(self._key("lease", name)))
        if value is None:
            return None
        return str(value).partition(" ")[2]

    # --- counters -----------------------------------------------------------------------

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        name = self._key("n", key)

        async def run() -> list[Any]:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.incrby(name, amount)
                if ttl is not None:
                    pipe.pexpire(name, _ms(ttl))
                result: list[Any] = await pipe.execute()
                return result

        return int((await self._call(run))[0])

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
        key = self._key("tb", bucket)
        empty = "1" if start_empty else "0"
        args: list[str | int] = [repr(float(capacity)), repr(float(rate)), repr(float(cost))]
        args += [empty, BUCKET_GRACE_MS]
        wait = await self._call(lambda: self._take(keys=[key], args=args))
        return float(wait)

    async def drain(self, bucket: str, capacity: float, rate: float) -> None:
        key = self._key("tb", bucket)
        args: list[str | int] = [repr(float(capacity)), repr(float(rate)), BUCKET_GRACE_MS]
        await self._call(lambda: self._drain(keys=[key], args=args))

    # --- memos --------------------------------------------------------------------------

    async def set_if_absent(self, key: str, value: str, ttl: float) -> bool:
        name = self._key("m", key)
        done = await self._call(lambda: self._client.set(name, value, nx=True, px=_ms(ttl)))
        return bool(done)

    async def get(self, key: str) -> str | None:
        value = await self._call(lambda: self._client.get(self._key("m", key)))
        return None if value is None else str(value)

    async def delete(self, key: str) -> None:
        # A key names a memo or a counter (as in the in-process maps): both go.
        await self._call(lambda: self._client.delete(self._key("m", key), self._key("n", key)))
