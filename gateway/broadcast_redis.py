"""Broadcast between replicas over Redis pub/sub (the seam is gateway.broadcast).

`publish` is a PUBLISH on `<prefix>bc:<topic>`. Each process holds one connection in
PSUBSCRIBE `<prefix>bc:*` (named `leadgate-broadcast` in CLIENT LIST) and hands what it
hears to its local subscribers. Pub/sub keeps nothing for a connection that is away: when
the subscription is regained (redis-py reconnects and subscribes again, or our loop does
after an error) every local callback gets RESYNC once and re-reads the store.

Best effort, as the seam says: a PUBLISH that fails is logged and dropped (the message is
in the store; subscribers find it on their periodic re-read), never raised into the
request or worker that made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from gateway.broadcast import RESYNC, Callback, InProcessBroadcast

log = logging.getLogger(__name__)

# How long to wait before subscribing again after the server went away.
RETRY_SECONDS = 1.0
# How long one read waits before looking at the connection again (redis-py PINGs an idle
# subscription every health_check_interval, which finds a connection that died silently).
READ_SECONDS = 1.0


def _glob_escape(text: str) -> str:
    """`text` as a literal in a PSUBSCRIBE pattern (a prefix may hold * ? [ ] or \\)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisBroadcast:
    """Owns `client` (gateway.redisconn.connect with decode=False: payloads are bytes)."""

    def __init__(
        self, client: aioredis.Redis, *, prefix: str, retry_seconds: float = RETRY_SECONDS
    ) -> None:
        self._client = client
        self._head = f"{prefix}bc:"
        self._head_bytes = self._head.encode()
        self._pattern = _glob_escape(self._head) + "*"
        self._retry = retry_seconds
        self._local = InProcessBroadcast()
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._missed = False  # a subscription attempt failed: broadcasts may be lost

    @property
    def shared(self) -> bool:
        return True

    @property
    def subscribed(self) -> bool:
        """Whether the PSUBSCRIBE connection is up now (tests, ops)."""
        return self._subscribed.is_set()

    async def open(self, *, wait: float = 5.0) -> None:
        """Start listening; return once subscribed (or after `wait` seconds: the loop keeps
        trying, and RESYNC tells the subscribers when it got there)."""
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._task = asyncio.create_task(self._listen(self._pubsub), name="redis-broadcast")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), wait)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None
        await self._local.close()
        await self._client.aclose()

    async def publish(self, topic: str, message: bytes) -> None:
        try:
            await self._client.publish(self._head + topic, message)
        except (RedisError, OSError) as exc:
            # The topic names a visitor (widget:<name>:<visitor id>): it stays out of the log.
            log.warning("broadcast not sent (Redis: %s); subscribers catch up from the store", exc)

    def subscribe(self, topic: str, callback: Callback) -> Callable[[], None]:
        return self._local.subscribe(topic, callback)

    def topics(self) -> int:
        return self._local.topics()

    # --- the subscription -----------------------------------------------------------------

    async def _listen(self, pubsub: PubSub) -> None:
        while True:
            try:
                if not pubsub.subscribed:
                    await pubsub.psubscribe(self._pattern)
                    assert pubsub.connection is not None
                    # Called whenever redis-py connects again (after its own callback has
                    # subscribed again): broadcasts meanwhile may be lost.
                    pubsub.connection.register_connect_callback(self._reconnected)
                message = await pubsub.get_message(timeout=READ_SECONDS)
                # A read went through on a subscribed connection: we hear from now on.
                if self._missed:
                    self._regained()
                self._subscribed.set()
                if message is not None and message["type"] == "pmessage":
                    await self._deliver(message)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self._subscribed.is_set():
                    log.warning("broadcast: lost the Redis subscription (%s); retrying", exc)
                self._subscribed.clear()
                self._missed = True
                await asyncio.sleep(self._retry)

    async def _deliver(self, message: dict[str, Any]) -> None:
        channel: bytes = message["channel"]
        topic = channel[len(self._head_bytes) :].decode("utf-8", "replace")
        await self._local.publish(topic, message["data"])

    def _reconnected(self, connection: Any) -> None:
        self._missed = True

    def _regained(self) -> None:
        log.info("broadcast: Redis subscription regained; subscribers re-read the store")
        self._missed = False
        self._local.tell_everyone(RESYNC)
