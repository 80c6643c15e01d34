"""RedisCoordination between replicas: a shared budget, a dead holder's lease, a dead server.

The protocol suite (test_coordination.py) runs on Redis too; here is what only several
processes on one server show: replicas taking from one bucket together stay within its
budget, a holder killed with SIGKILL loses its lease when the ttl runs out, and a server
that does not answer is a StoreUnavailable (a 503 to the client), never a 500.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import StoreSettings
from gateway.coordination_redis import CoordinationUnavailable, RedisCoordination
from gateway.redisconn import connect
from gateway.store.base import StoreUnavailable
from tests.coordination.test_coordination import redis_replica
from tests.redis_server import RedisTarget, free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def replicas(redis_target: RedisTarget) -> AsyncIterator[list[RedisCoordination]]:
    pair = [redis_replica(redis_target, "replica-a"), redis_replica(redis_target, "replica-b")]
    yield pair
    for coord in pair:
        await coord.close()


async def test_two_replicas_taking_from_one_bucket_never_exceed_its_budget(
    replicas: list[RedisCoordination],
) -> None:
    """The Bitrix24 portal's budget: a burst of 5, then 20 a second, for both together."""
    capacity, rate = 5.0, 20.0
    taken: list[float] = []
    start = time.monotonic()
    deadline = start + 1.0

    async def worker(coord: RedisCoordination) -> None:
        while time.monotonic() < deadline:
            wait = await coord.take("b24:portal.example", capacity=capacity, rate=rate)
            if wait == 0.0:
                taken.append(time.monotonic())
            else:
                await asyncio.sleep(wait)

    # Four workers per replica, as several outbox workers per process would be.
    await asyncio.gather(*(worker(c) for c in replicas for _ in range(4)))
    elapsed = time.monotonic() - start
    assert len(taken) <= capacity + rate * elapsed  # the server's clock runs inside ours
    assert len(taken) >= capacity + rate * elapsed * 0.5  # and the budget is used, not idle
    # No window of the run saw more than its share: a burst at most once, then the rate.
    for i, t in enumerate(taken):
        in_window = sum(1 for u in taken[i:] if u - t <= 0.25)
        assert in_window <= capacity + rate * 0.25 + 1


async def test_replicas_share_a_bucket_spent_or_drained_by_either(
    replicas: list[RedisCoordination],
) -> None:
    a, b = replicas
    assert await a.take("form:198.51.100.7", capacity=2, rate=0.01) == 0.0
    assert await b.take("form:198.51.100.7", capacity=2, rate=0.01) == 0.0
    assert await a.take("form:198.51.100.7", capacity=2, rate=0.01) > 0  # spent by both
    assert await b.take("b24:other", capacity=3, rate=0.01) == 0.0
    await a.drain("b24:other", capacity=3, rate=0.01)  # a 503 seen by replica a
    assert await b.take("b24:other", capacity=3, rate=0.01) > 0  # holds for replica b


HOLDER = """
import asyncio, sys
from gateway.config import StoreSettings
from gateway.coordination_redis import RedisCoordination
from gateway.redisconn import connect

async def main() -> None:
    url, prefix, ttl = sys.argv[1], sys.argv[2], float(sys.argv[3])
    coord = RedisCoordination(connect(StoreSettings(kind="redis", url=url)), prefix=prefix,
                              owner="doomed-replica")
    lease = await coord.acquire("job:mailbox:sales/INBOX", ttl)
    print("held" if lease else "refused", flush=True)
    while lease is not None and await coord.renew(lease):  # a live holder keeps it
        await asyncio.sleep(ttl / 4)

asyncio.run(main())
"""


async def test_a_lease_of_a_killed_holder_is_taken_over_after_its_ttl(
    redis_target: RedisTarget, replicas: list[RedisCoordination]
) -> None:
    ttl = 1.0
    survivor = replicas[0]
    holder = await asyncio.create_subprocess_exec(
        *[sys.executable, "-c", HOLDER, redis_target.url, redis_target.prefix, str(ttl)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), 30)
        assert line.strip() == b"held"
        # Alive and renewing: held past its first ttl, and nobody else gets it.
        await asyncio.sleep(ttl * 1.5)
        assert await survivor.acquire("job:mailbox:sales/INBOX", ttl) is None
        assert await survivor.holder("job:mailbox:sales/INBOX") == "doomed-replica"
        holder.kill()
        await holder.wait()
        killed = time.monotonic()
        taken = None
        while taken is None and time.monotonic() - killed < ttl + 2:
            taken = await survivor.acquire("job:mailbox:sales/INBOX", ttl)
            if taken is None:
                await asyncio.sleep(0.05)
        assert taken is not None, "the dead holder's lease was never taken over"
        # Within one lease period of the death (the last renewal was at most ttl/4 before).
        assert time.monotonic() - killed <= ttl + 0.5
        assert await survivor.holder("job:mailbox:sales/INBOX") == "replica-a"
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


async def test_keys_stay_under_the_prefix(
    redis_target: RedisTarget, replicas: list[RedisCoordination]
) -> None:
    a = replicas[0]
    lease = await a.acquire("job:purge", 5)
    assert lease is not None
    await a.incr("rr:day", ttl=5)
    await a.take("form:192.0.2.9", capacity=2, rate=1)
    await a.set_if_absent("autoreply:x", "1", 5)
    client = connect(StoreSettings(kind="redis", url=redis_target.url))
    try:
        keys = sorted([k async for k in client.scan_iter(match=f"{redis_target.prefix}*")])
    finally:
        await client.aclose()
    p = redis_target.prefix + "co:"
    assert keys == [
        f"{p}lease:job:purge",
        f"{p}m:autoreply:x",
        f"{p}n:rr:day",
        f"{p}tb:form:192.0.2.9",
    ]


async def test_a_server_that_does_not_answer_is_store_unavailable() -> None:
    # Nothing listens on this port: every call fails fast, as a 503 would say.
    dead = connect(
        StoreSettings(kind="redis", url=f"redis://127.0.0.1:{free_port()}/0", timeout_seconds=1)
    )
    coord = RedisCoordination(dead, prefix="lgtest:dead:")
    try:
        with pytest.raises(CoordinationUnavailable) as caught:
            await coord.take("form:192.0.2.1", capacity=2, rate=1)
        assert isinstance(caught.value, StoreUnavailable)
        with pytest.raises(StoreUnavailable):
            await coord.acquire("job:x", 1)
    finally:
        await coord.close()
