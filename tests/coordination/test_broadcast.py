"""The broadcast seam (gateway.broadcast): topics, later delivery, unsubscribing — in one
process, and on Redis between two replicas (each with its own client and subscription);
then what only Redis has: a lost subscription regained means RESYNC to every subscriber.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

import pytest
import redis

from gateway.broadcast import RESYNC, Broadcast, InProcessBroadcast
from gateway.broadcast_redis import RedisBroadcast
from gateway.config import StoreSettings
from gateway.redisconn import connect
from tests.redis_server import RedisTarget


class Counted(Broadcast, Protocol):
    def topics(self) -> int: ...


@dataclass
class Pair:
    one: Counted  # publishes
    other: Counted  # another replica, subscribed (in-process: the same object)

    async def settle(self) -> None:
        """Return once every broadcast published so far has reached the subscribers: a
        marker published after them arrives after them (one subscription, in order)."""
        marker = f"settle:{uuid.uuid4().hex}"
        heard = asyncio.Event()
        stop = self.other.subscribe(marker, lambda m: heard.set())
        try:
            await self.one.publish(marker, b"")
            await asyncio.wait_for(heard.wait(), 10)
            await asyncio.sleep(0)  # callbacks queued before the marker's have run
        finally:
            stop()


async def in_process(_: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    broadcast = InProcessBroadcast()
    await broadcast.open()
    yield Pair(broadcast, broadcast)
    await broadcast.close()


def redis_replica(target: RedisTarget, name: str, prefix: str | None = None) -> RedisBroadcast:
    client = connect(StoreSettings(kind="redis", url=target.url), decode=False, name=name)
    return RedisBroadcast(client, prefix=prefix or target.prefix, retry_seconds=0.1)


async def on_redis(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    target: RedisTarget = request.getfixturevalue("redis_target")
    one, other = redis_replica(target, "lgtest-bc-one"), redis_replica(target, "lgtest-bc-other")
    await one.open()
    await other.open()
    assert one.subscribed and other.subscribed
    yield Pair(one, other)
    await one.close()
    await other.close()


IMPLEMENTATIONS: dict[str, Callable[[pytest.FixtureRequest], AsyncIterator[Pair]]] = {
    "in-process": in_process,
    "redis": on_redis,
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    async for made in IMPLEMENTATIONS[request.param](request):
        yield made


async def test_subscribers_of_a_topic_hear_it_later_not_inside_publish(pair: Pair) -> None:
    heard: list[tuple[str, bytes]] = []
    inside_publisher: list[bool] = []

    def listener(name: str) -> Callable[[bytes], None]:
        def hear(message: bytes) -> None:
            inside_publisher.append(asyncio.current_task() is publisher)
            heard.append((name, message))

        return hear

    publisher = asyncio.current_task()
    stop_a = pair.other.subscribe("widget:site:v1", listener("a"))
    pair.other.subscribe("widget:site:v1", listener("b"))
    pair.other.subscribe("widget:site:v2", listener("other"))
    await pair.one.publish("widget:site:v1", b"1")
    await pair.settle()
    assert heard == [("a", b"1"), ("b", b"1")]
    assert not any(inside_publisher)  # never inside the publisher's frame
    stop_a()
    stop_a()  # twice is harmless
    await pair.one.publish("widget:site:v1", b"2")
    await pair.settle()
    assert heard[2:] == [("b", b"2")]
    assert pair.other.topics() == 2
    assert pair.one.shared is (pair.one is not pair.other)


async def test_a_failing_subscriber_does_not_stop_the_others(pair: Pair) -> None:
    heard: list[bytes] = []

    def broken(message: bytes) -> None:
        raise RuntimeError("boom")

    pair.other.subscribe("t", broken)
    pair.other.subscribe("t", heard.append)
    await pair.one.publish("t", b"x")
    await pair.settle()
    assert heard == [b"x"]


async def test_nobody_listening_costs_nothing_and_topics_are_forgotten(pair: Pair) -> None:
    await pair.one.publish("nobody", b"x")
    stop = pair.other.subscribe("t", lambda m: None)
    assert pair.other.topics() == 1
    stop()
    assert pair.other.topics() == 0


async def test_payloads_are_bytes_as_published(pair: Pair) -> None:
    heard: list[bytes] = []
    pair.other.subscribe("widget:site:vё", heard.append)
    payload = "привет".encode() + b"\xff\x00"  # not even UTF-8
    await pair.one.publish("widget:site:vё", payload)
    await pair.settle()
    assert heard == [payload]


# --- Redis only -------------------------------------------------------------------------------


def _kill_client(url: str, name: str) -> int:
    """CLIENT KILL the connections named `name` (ours only); how many there were."""
    admin = redis.Redis.from_url(url, decode_responses=True)
    try:
        ids = [c["id"] for c in admin.client_list() if c.get("name") == name]
        for client_id in ids:
            admin.client_kill_filter(_id=client_id)
        return len(ids)
    finally:
        admin.close()


async def test_a_lost_subscription_regained_tells_every_subscriber_to_resync(
    redis_target: RedisTarget,
) -> None:
    publisher = redis_replica(redis_target, "lgtest-bc-pub")
    listener = redis_replica(redis_target, "lgtest-bc-sub")
    await publisher.open()
    await listener.open()
    pair = Pair(publisher, listener)
    try:
        heard: dict[str, list[bytes]] = {"a": [], "b": []}
        listener.subscribe("widget:site:a", heard["a"].append)
        listener.subscribe("widget:site:b", heard["b"].append)
        resynced = asyncio.Event()  # subscribed last: told last
        listener.subscribe("widget:site:c", lambda m: resynced.set() if m == RESYNC else None)
        await publisher.publish("widget:site:a", b"before")
        await pair.settle()
        assert heard == {"a": [b"before"], "b": []}  # no RESYNC on the first subscription

        assert _kill_client(redis_target.url, "lgtest-bc-sub") == 1
        await asyncio.wait_for(resynced.wait(), 10)
        assert listener.subscribed
        assert heard == {"a": [b"before", RESYNC], "b": [RESYNC]}  # once each

        await publisher.publish("widget:site:b", b"after")  # subscribed again: heard
        await pair.settle()
        assert heard["b"] == [RESYNC, b"after"]
    finally:
        await publisher.close()
        await listener.close()


async def test_gateways_with_different_prefixes_do_not_hear_each_other(
    redis_target: RedisTarget,
) -> None:
    mine = redis_replica(redis_target, "lgtest-bc-mine")
    # A prefix with glob characters: the pattern must match it literally.
    theirs = redis_replica(redis_target, "lgtest-bc-theirs", prefix=redis_target.prefix + "[*]")
    await mine.open()
    await theirs.open()
    try:
        heard_mine: list[bytes] = []
        heard_theirs: list[bytes] = []
        mine.subscribe("t", heard_mine.append)
        theirs.subscribe("t", heard_theirs.append)
        await theirs.publish("t", b"theirs")
        await mine.publish("t", b"mine")
        await Pair(mine, mine).settle()
        await Pair(theirs, theirs).settle()
        assert heard_mine == [b"mine"] and heard_theirs == [b"theirs"]
    finally:
        await mine.close()
        await theirs.close()
