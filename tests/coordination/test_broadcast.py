"""The broadcast seam (gateway.broadcast): topics, later delivery, unsubscribing."""

from __future__ import annotations

import asyncio

from gateway.broadcast import InProcessBroadcast


async def test_subscribers_of_a_topic_hear_it_later_not_inside_publish() -> None:
    broadcast = InProcessBroadcast()
    heard: list[tuple[str, bytes]] = []
    stop_a = broadcast.subscribe("widget:site:v1", lambda m: heard.append(("a", m)))
    broadcast.subscribe("widget:site:v1", lambda m: heard.append(("b", m)))
    broadcast.subscribe("widget:site:v2", lambda m: heard.append(("other", m)))
    await broadcast.publish("widget:site:v1", b"1")
    assert heard == []  # never inside the publisher's frame
    await asyncio.sleep(0)
    assert heard == [("a", b"1"), ("b", b"1")]
    stop_a()
    stop_a()  # twice is harmless
    await broadcast.publish("widget:site:v1", b"2")
    await asyncio.sleep(0)
    assert heard[2:] == [("b", b"2")]
    assert broadcast.topics() == 2
    assert broadcast.shared is False


async def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    broadcast = InProcessBroadcast()
    heard: list[bytes] = []

    def broken(message: bytes) -> None:
        raise RuntimeError("boom")

    broadcast.subscribe("t", broken)
    broadcast.subscribe("t", heard.append)
    await broadcast.publish("t", b"x")
    await asyncio.sleep(0)
    assert heard == [b"x"]


async def test_nobody_listening_costs_nothing_and_topics_are_forgotten() -> None:
    broadcast = InProcessBroadcast()
    await broadcast.publish("nobody", b"x")
    stop = broadcast.subscribe("t", lambda m: None)
    stop()
    assert broadcast.topics() == 0
    await broadcast.close()
