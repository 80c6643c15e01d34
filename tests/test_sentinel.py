"""Redis Sentinel: the gateway's clients follow a promoted replica.

A master, a replica and three real `redis-sentinel`s (tests/redis_server.SentinelGroup).
The master is SIGKILLed; once the sentinels promote the replica, a client made by
gateway.redisconn.connect with `sentinels = [...]` works again through the RedisStore and
RedisCoordination (with the state written before the crash) and RedisBroadcast subscribes
again and tells its subscribers to resync. While there is no master a call fails as
StoreUnavailable (a 503 to the sender), never as an answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.broadcast import RESYNC
from gateway.broadcast_redis import RedisBroadcast
from gateway.config import StoreSettings
from gateway.coordination_redis import RedisCoordination
from gateway.models import Outcome
from gateway.redisconn import connect
from gateway.store.base import StoreUnavailable
from gateway.store.redis import RedisStore
from tests.redis_server import SentinelGroup, unique_prefix
from tests.store.contract import make_event, record, rr

T = TypeVar("T")


def sentinel_settings(group: SentinelGroup) -> StoreSettings:
    return StoreSettings(
        kind="redis", sentinels=group.addresses, master=group.name, timeout_seconds=1
    )


async def after_failover(group: SentinelGroup, call: Callable[[], Awaitable[T]]) -> T:
    """`call`'s answer once the client reached the new master: until then the pool's
    connections to the dead one fail, as a 503 would say."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return await call()
        except StoreUnavailable:
            assert time.monotonic() < deadline, group.logs()
            await asyncio.sleep(0.2)


async def test_the_store_follows_a_promoted_replica(redis_sentinel: SentinelGroup) -> None:
    settings = sentinel_settings(redis_sentinel)
    store = RedisStore(connect(settings), prefix=unique_prefix())
    await store.open()
    try:
        first = await record(store, make_event("f1", phone="+79161234567"), assignment=rr("anna"))
        assert first.receipt.outcome is Outcome.CREATED
        redis_sentinel.wait_replicated()

        old = redis_sentinel.kill_master()
        await asyncio.to_thread(redis_sentinel.wait_for_promotion, old)

        # What was stored before the crash is there: the sender's retry is a replay, the
        # person's next contact joins the lead, the round robin goes on from its count.
        again = await after_failover(
            redis_sentinel, lambda: record(store, make_event("f1", phone="+79161234567"))
        )
        assert (again.receipt.outcome, again.receipt.event_id) == (
            Outcome.REPLAYED,
            first.receipt.event_id,
        )
        joined = await record(store, make_event("f2", phone="8 916 123-45-67"))
        assert (joined.receipt.outcome, joined.receipt.lead_id) == (
            Outcome.MERGED,
            first.receipt.lead_id,
        )
        other = await record(
            store, make_event("f3", phone="+79030000003"), assignment=rr("anna", "boris")
        )
        assert other.assignment is not None and other.assignment.seller_id == "boris"
    finally:
        await store.close()


async def test_coordination_and_broadcast_follow_a_promoted_replica(
    redis_sentinel: SentinelGroup,
) -> None:
    store = sentinel_settings(redis_sentinel)
    prefix = unique_prefix()
    coord = RedisCoordination(connect(store), prefix=prefix, owner="replica-a")
    broadcast = RedisBroadcast(
        connect(store, decode=False, name="lgtest-sentinel-bc"), prefix=prefix, retry_seconds=0.2
    )
    heard: list[bytes] = []
    resynced, after = asyncio.Event(), asyncio.Event()

    def hear(message: bytes) -> None:
        heard.append(message)
        (resynced if message == RESYNC else after).set()

    broadcast.subscribe("widget:site:v1", hear)
    await broadcast.open()
    try:
        assert broadcast.subscribed
        assert await coord.incr("rr:2026-11-30") == 1
        lease = await coord.acquire("job:mailbox:sales/INBOX", 60)
        assert lease is not None
        assert await coord.set_if_absent("autoreply:abc", "replica-a", 600)
        redis_sentinel.wait_replicated()

        old = redis_sentinel.kill_master()
        new = await asyncio.to_thread(redis_sentinel.wait_for_promotion, old)
        assert new != old

        # The pool's connections went to the dead master: the next calls may fail (as a
        # 503 would say), then the client asks the sentinels and reaches the new master.
        count = await after_failover(redis_sentinel, lambda: coord.incr("rr:2026-11-30"))
        assert count == 2  # the count made before the crash is there
        assert await coord.get("autoreply:abc") == "replica-a"
        assert await coord.holder("job:mailbox:sales/INBOX") == "replica-a"
        assert await coord.renew(lease) is True
        assert await coord.take("b24:portal", capacity=2, rate=1) == 0.0

        # The subscription moved too: its subscribers re-read, then hear new broadcasts.
        await asyncio.wait_for(resynced.wait(), 30)
        await broadcast.publish("widget:site:v1", b"after")
        await asyncio.wait_for(after.wait(), 10)
        assert heard[-1] == b"after" and RESYNC in heard
    finally:
        await broadcast.close()
        await coord.close()
