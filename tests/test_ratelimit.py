"""The forms' per-client limiter, kept in Coordination (issue 16: the bucket map of the
old limiter had no effective cap, and past 100k clients each new one cost milliseconds)."""

from __future__ import annotations

import time

from gateway.coordination import InProcessCoordination
from gateway.ratelimit import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_client_gets_its_burst_then_waits_for_the_refill() -> None:
    clock = FakeClock()
    limiter = RateLimiter(InProcessCoordination(clock=clock), 3, 60, namespace="form")
    assert [await limiter.hit("192.0.2.1") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await limiter.hit("192.0.2.1") == 20.0  # 3 per minute: one every 20 s
    assert await limiter.hit("192.0.2.2") == 0.0  # another client is not affected
    clock.now += 20
    assert await limiter.hit("192.0.2.1") == 0.0


async def test_replicas_on_shared_coordination_share_a_clients_budget() -> None:
    shared = InProcessCoordination(clock=FakeClock())
    one = RateLimiter(shared, 4, 60, namespace="form")
    two = RateLimiter(shared, 4, 60, namespace="form")
    allowed = [await (one if i % 2 else two).hit("192.0.2.1") == 0.0 for i in range(8)]
    assert allowed.count(True) == 4


async def test_the_bucket_map_stays_at_its_bound_oldest_client_out_first() -> None:
    clock = FakeClock()
    coordination = InProcessCoordination(clock=clock)  # the default bound: 100,000 keys
    limiter = RateLimiter(coordination, 2, 60, namespace="form")
    await limiter.hit("first")
    await limiter.hit("first")  # spent
    await limiter.hit("second")
    await limiter.hit("second")  # spent
    for i in range(150_000):
        clock.now += 0.0001  # all within one window: none has refilled
        await limiter.hit(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
        if i == 90_000:
            assert await limiter.hit("second") > 0  # touched: it moves to the young end
    assert coordination.size("form") == 100_000
    assert await limiter.hit("first") == 0.0  # the least recently used went first
    assert await limiter.hit("second") > 0  # used recently: still remembered, still limited


async def test_cost_per_new_client_stays_flat_past_100k_clients() -> None:
    """Time per hit of a new client with 10k buckets and with 200k: the same order.

    The old limiter swept its whole map on every new client once it held 100k buckets
    that had not refilled (a flood within one window), a thousandfold slowdown; the bound
    here is LRU eviction, O(1) per client. Generous factor: the machine is shared."""
    coordination = InProcessCoordination()
    limiter = RateLimiter(coordination, 20, 60, namespace="form")
    counter = iter(range(10**9))

    async def new_clients(n: int) -> None:
        for _ in range(n):
            await limiter.hit(f"client-{next(counter)}")

    async def per_hit(n: int = 2_000, rounds: int = 5) -> float:
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            await new_clients(n)
            best = min(best, (time.perf_counter() - start) / n)
        return best

    await new_clients(10_000)
    early = await per_hit()
    await new_clients(200_000 - coordination.size("form"))
    late = await per_hit()
    assert coordination.size("form") == 100_000
    assert late < early * 10, (early, late)
