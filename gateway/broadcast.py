"""Fan-out between replicas: "something new for topic T" reaches every process listening.

A channel whose customers hold a live connection to one replica (the site widget's
WebSocket) needs a reply made on another replica — a seller's answer sent by whichever
message worker claimed it — to reach the socket. The store holds the message (the truth);
a broadcast only tells the processes holding sockets of that topic that it exists.

Delivery is at most once and best effort by design: a subscriber that missed a broadcast
(its replica reconnecting to Redis) re-reads the store when its client reconnects or on
its own periodic check, so nothing is lost, only late.

`InProcessBroadcast` serves one process (callbacks run on the event loop, never inside
`publish`). The shared implementation (gateway.broadcast_redis) has the same shape:
`publish` is a PUBLISH on `<prefix>bc:<topic>`; each process keeps one connection in
PSUBSCRIBE `<prefix>bc:*` and calls its local callbacks (an InProcessBroadcast); after
that connection was lost and regained it calls every callback once with `RESYNC`, since
broadcasts may have been missed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

# What a subscriber gets instead of a message when some may have been missed.
RESYNC = b""

Callback = Callable[[bytes], None]


class Broadcast(Protocol):
    @property
    def shared(self) -> bool:
        """True when other processes hear what this one publishes."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, topic: str, message: bytes) -> None:
        """Tell every subscriber of `topic`, in every process, about `message`."""

    def subscribe(self, topic: str, callback: Callback) -> Callable[[], None]:
        """Call `callback(message)` on the event loop for each broadcast on `topic` (or
        RESYNC); returns the function that ends the subscription."""


class InProcessBroadcast:
    def __init__(self) -> None:
        self._subscribers: dict[str, list[Callback]] = {}

    @property
    def shared(self) -> bool:
        return False

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._subscribers.clear()

    async def publish(self, topic: str, message: bytes) -> None:
        callbacks = self._subscribers.get(topic)
        if not callbacks:
            return
        loop = asyncio.get_running_loop()
        for callback in list(callbacks):
            # Later, not now: a subscriber must never run inside its publisher's frame.
            loop.call_soon(_safely, callback, message)

    def subscribe(self, topic: str, callback: Callback) -> Callable[[], None]:
        self._subscribers.setdefault(topic, []).append(callback)

        def unsubscribe() -> None:
            callbacks = self._subscribers.get(topic)
            if callbacks is None:
                return
            try:
                callbacks.remove(callback)
            except ValueError:
                return
            if not callbacks:
                del self._subscribers[topic]

        return unsubscribe

    def tell_everyone(self, message: bytes) -> None:
        """Call every callback of every topic with `message` (soon, on the loop): RESYNC
        after a shared implementation may have missed broadcasts."""
        loop = asyncio.get_running_loop()
        for callbacks in list(self._subscribers.values()):
            for callback in list(callbacks):
                loop.call_soon(_safely, callback, message)

    def topics(self) -> int:
        """How many topics have subscribers (tests, ops)."""
        return len(self._subscribers)


def _safely(callback: Callback, message: bytes) -> None:
    try:
        callback(message)
    except Exception:
        log.exception("broadcast subscriber failed")
