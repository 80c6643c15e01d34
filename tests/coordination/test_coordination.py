"""The Coordination protocol, run against every implementation: in-process, and Redis
with two clients playing two replicas (the tests' own redis-server, or REDIS_URL under a
prefix of the test's own).

Each implementation comes with a way to let time pass: the in-process one reads a fake
clock; a shared one (Redis) lets the real clock run, so durations here stay sub-second.
Add an implementation by adding a factory to IMPLEMENTATIONS.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from gateway.config import StoreSettings
from gateway.coordination import Coordination, InProcessCoordination
from gateway.coordination_redis import RedisCoordination
from gateway.redisconn import connect
from tests.redis_server import RedisTarget


@dataclass
class Harness:
    coord: Coordination
    # A second process on the same shared state (another replica); for the in-process
    # implementation the same object: one process is all it coordinates.
    other: Coordination
    advance: Callable[[float], Awaitable[None]]
    exact: bool  # True when time passes only through `advance`
    # How much slower the token-bucket tests run: on a real clock a busy machine's pauses
    # between two calls must stay small beside the time one token takes.
    slow: float = 1.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def advance(self, seconds: float) -> None:
        self.now += seconds


async def in_process() -> AsyncIterator[Harness]:
    clock = FakeClock()
    coord = InProcessCoordination(owner="replica-a", clock=clock)
    await coord.open()
    yield Harness(coord=coord, other=coord, advance=clock.advance, exact=True)
    await coord.close()


def redis_replica(target: RedisTarget, owner: str) -> RedisCoordination:
    """One replica's coordination: a client (and connection pool) of its own."""
    client = connect(StoreSettings(kind="redis", url=target.url, timeout_seconds=5))
    return RedisCoordination(client, prefix=target.prefix, owner=owner)


async def on_redis(target: RedisTarget) -> AsyncIterator[Harness]:
    coord, other = redis_replica(target, "replica-a"), redis_replica(target, "replica-b")
    await coord.open()
    await other.open()
    yield Harness(coord=coord, other=other, advance=asyncio.sleep, exact=False, slow=5.0)
    await coord.close()
    await other.close()


# Each factory asks for the fixtures it needs: only the Redis one starts (or reaches) a server.
IMPLEMENTATIONS: dict[str, Callable[[pytest.FixtureRequest], AsyncIterator[Harness]]] = {
    "in-process": lambda _: in_process(),
    "redis": lambda request: on_redis(request.getfixturevalue("redis_target")),
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
async def h(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async for harness in IMPLEMENTATIONS[request.param](request):
        yield harness


def near(expected: float, harness: Harness) -> object:
    return pytest.approx(expected, abs=1e-9 if harness.exact else 0.05 * harness.slow)


# --- leases ---------------------------------------------------------------------------------


async def test_a_lease_has_one_holder_until_it_expires(h: Harness) -> None:
    lease = await h.coord.acquire("job:mailbox", 0.3)
    assert lease is not None and lease.owner == h.coord.owner and lease.ttl == 0.3
    assert await h.coord.holder("job:mailbox") == h.coord.owner
    assert await h.other.acquire("job:mailbox", 0.3) is None  # held: nobody else gets it
    await h.advance(0.4)
    assert await h.coord.holder("job:mailbox") is None
    taken = await h.other.acquire("job:mailbox", 0.3)  # expired: the next one takes over
    assert taken is not None and taken.token != lease.token
    assert await h.coord.renew(lease) is False  # the old holder learns it lost the lease
    await h.coord.release(lease)  # a stale release changes nothing
    assert await h.coord.holder("job:mailbox") == taken.owner


async def test_renew_extends_and_release_frees(h: Harness) -> None:
    lease = await h.coord.acquire("job:purge", 0.3)
    assert lease is not None
    await h.advance(0.2)
    assert await h.coord.renew(lease) is True  # 0.3 from now
    await h.advance(0.2)
    assert await h.coord.holder("job:purge") == h.coord.owner  # would have expired unrenewed
    await h.coord.release(lease)
    assert await h.coord.holder("job:purge") is None
    again = await h.other.acquire("job:purge", 0.3)
    assert again is not None
    assert await h.coord.renew(lease) is False  # released: renewing does not resurrect it


async def test_every_acquisition_has_a_new_fencing_token(h: Harness) -> None:
    tokens = set()
    for _ in range(3):
        lease = await h.coord.acquire("job:fence", 0.1)
        assert lease is not None
        tokens.add(lease.token)
        await h.coord.release(lease)
    assert len(tokens) == 3
    first = await h.coord.acquire("job:fence", 0.1)
    assert first is not None
    await h.advance(0.15)
    second = await h.coord.acquire("job:fence", 0.1)  # the same owner, after expiry
    assert second is not None and second.token != first.token
    assert await h.coord.renew(first) is False  # the earlier holding is fenced off
    assert await h.coord.renew(second) is True


async def test_leases_are_independent_by_name(h: Harness) -> None:
    a = await h.coord.acquire("job:a", 0.3)
    b = await h.other.acquire("job:b", 0.3)
    assert a is not None and b is not None
    assert await h.coord.holder("job:nobody") is None


# --- counters -------------------------------------------------------------------------------


async def test_incr_counts_and_expires(h: Harness) -> None:
    assert await h.coord.incr("count:rr") == 1
    assert await h.other.incr("count:rr", 4) == 5
    assert await h.coord.incr("count:day", ttl=0.2) == 1
    assert await h.coord.incr("count:day") == 2  # no ttl given: the expiry stays
    await h.advance(0.3)
    assert await h.coord.incr("count:day") == 1  # expired: counts from zero again
    await h.advance(0.3)
    assert await h.coord.incr("count:day") == 2  # restarted without a ttl: it keeps
    assert await h.coord.incr("count:rr", -5) == 0
    await h.coord.delete("count:rr")
    assert await h.coord.incr("count:rr") == 1


# --- token buckets --------------------------------------------------------------------------


async def test_take_spends_a_full_bucket_then_says_how_long_to_wait(h: Harness) -> None:
    r, t = 10 / h.slow, 0.1 * h.slow  # the rate, and the time one token takes
    for _ in range(3):
        assert await h.coord.take("form:192.0.2.1", capacity=3, rate=r) == 0.0
    wait = await h.coord.take("form:192.0.2.1", capacity=3, rate=r)
    assert wait == near(t, h)  # one token at 10 a second
    again = await h.other.take("form:192.0.2.1", capacity=3, rate=r)
    assert again == near(t, h)  # a refusal takes nothing
    await h.advance(t * 1.1)
    assert await h.other.take("form:192.0.2.1", capacity=3, rate=r) == 0.0
    assert await h.coord.take("form:192.0.2.1", capacity=3, rate=r) > 0
    # Another client's bucket is its own.
    assert await h.coord.take("form:192.0.2.2", capacity=3, rate=r) == 0.0


async def test_a_bucket_refills_up_to_its_capacity_only(h: Harness) -> None:
    assert await h.coord.take("b24:portal", capacity=2, rate=100, cost=2) == 0.0
    await h.advance(0.5)  # would be 50 tokens without the cap
    assert await h.coord.take("b24:portal", capacity=2, rate=100) == 0.0
    assert await h.coord.take("b24:portal", capacity=2, rate=100) == 0.0
    assert await h.coord.take("b24:portal", capacity=2, rate=100) > 0


async def test_start_empty_and_drain(h: Harness) -> None:
    r, t = 10 / h.slow, 0.1 * h.slow
    wait = await h.coord.take("b24:busy", capacity=4, rate=r, start_empty=True)
    assert wait == near(t, h)  # after a restart: as if the remote burst was just spent
    await h.advance(4.5 * t)
    for _ in range(4):
        assert await h.coord.take("b24:busy", capacity=4, rate=r) == 0.0
    await h.advance(5 * t)
    await h.other.drain("b24:busy", capacity=4, rate=r)  # the remote side said 503
    assert await h.coord.take("b24:busy", capacity=4, rate=r) == near(t, h)
    await h.coord.drain("b24:unknown", capacity=4, rate=r)  # an unknown bucket drains too
    assert await h.coord.take("b24:unknown", capacity=4, rate=r) > 0


async def test_a_cost_above_the_capacity_is_refused(h: Harness) -> None:
    with pytest.raises(ValueError):
        await h.coord.take("form:x", capacity=2, rate=1, cost=3)


async def test_concurrent_takers_never_exceed_the_budget(h: Harness) -> None:
    """Many tasks (or replicas) taking at once get exactly the capacity, not more."""
    takers = [h.coord if i % 2 else h.other for i in range(40)]
    waits = await asyncio.gather(*(c.take("b24:shared", capacity=10, rate=0.001) for c in takers))
    assert sum(1 for w in waits if w == 0.0) == 10


# --- memos ----------------------------------------------------------------------------------


async def test_set_if_absent_get_delete_and_expiry(h: Harness) -> None:
    key = "autoreply:abc:2026-01-12"
    assert await h.coord.set_if_absent(key, "replica-a", 0.3) is True
    assert await h.other.set_if_absent(key, "replica-b", 0.3) is False  # the first one wins
    assert await h.other.get(key) == "replica-a"
    await h.advance(0.4)
    assert await h.coord.get(key) is None
    assert await h.other.set_if_absent(key, "replica-b", 0.3) is True  # expired: free again
    assert await h.coord.get(key) == "replica-b"
    await h.coord.delete(key)
    assert await h.coord.get(key) is None
    assert await h.coord.set_if_absent(key, "replica-a", 0.3) is True
    await h.coord.delete("autoreply:never-set")  # deleting nothing is fine


async def test_concurrent_set_if_absent_has_one_winner(h: Harness) -> None:
    results = await asyncio.gather(
        *(
            (h.coord if i % 2 else h.other).set_if_absent("autoreply:race", str(i), 1)
            for i in range(20)
        )
    )
    assert results.count(True) == 1


# --- bounds (the in-process implementation) ------------------------------------------------


async def test_bucket_map_is_bounded_and_evicts_least_recently_used_first() -> None:
    clock = FakeClock()
    coord = InProcessCoordination(clock=clock, max_keys=1000)
    assert await coord.take("b24:portal", capacity=5, rate=1, cost=5) == 0.0  # spent
    for i in range(1000):
        await coord.take(f"form:{i}", capacity=2, rate=1)
    await coord.take("form:0", capacity=2, rate=1)  # touched: now the most recent
    for i in range(1000, 1500):
        await coord.take(f"form:{i}", capacity=2, rate=1)
    assert coord.size("form") == 1000  # at the bound, not above
    # form:0 was used recently: kept with its spent tokens, so it is still limited.
    assert await coord.take("form:0", capacity=2, rate=1) > 0
    # form:1 was the least recently used: forgotten, so it starts full again.
    assert await coord.take("form:1", capacity=2, rate=1) == 0.0
    assert await coord.take("form:1", capacity=2, rate=1) == 0.0
    # The flood of form clients never pushed out the portal's bucket: still empty.
    assert await coord.take("b24:portal", capacity=5, rate=1) > 0
    assert coord.size("b24") == 1


async def test_memo_map_is_bounded_per_namespace() -> None:
    coord = InProcessCoordination(clock=FakeClock(), max_keys=100)
    assert await coord.set_if_absent("other:keep", "x", 3600)
    for i in range(250):
        assert await coord.set_if_absent(f"autoreply:{i}", "x", 3600)
    assert coord.size("autoreply") == 100
    assert await coord.get("autoreply:0") is None  # the oldest went first
    assert await coord.get("autoreply:249") == "x"
    assert await coord.get("other:keep") == "x"


async def test_counters_of_expired_keys_are_swept() -> None:
    clock = FakeClock()
    coord = InProcessCoordination(clock=clock, max_keys=100)
    for i in range(100):
        await coord.incr(f"count:{i}", ttl=1)
    clock.now += 2
    for i in range(100, 150):
        await coord.incr(f"count:{i}")
    assert len(coord._counters) <= 100  # the expired ones were dropped past the bound
    assert await coord.incr("count:120") == 2
