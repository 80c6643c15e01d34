"""A 2xx on Redis means durable, with the real server failing under the store:

- the server is killed (SIGKILL) while events are recorded: every event the store
  acknowledged is there after the restart (AOF, `appendfsync always`), the ones it did
  not acknowledge raised StoreUnavailable, and the senders' retries make no duplicate;
- a reply lost after the transaction landed (redis-py reports a connection that died
  while watching as WatchError): the retry finds the write and the caller hears what it
  did — created, with its seller — and nothing is stored twice.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from gateway.assign import Assignment
from gateway.models import Outcome
from gateway.store.base import LeadQuery, Recorded, StoreUnavailable
from gateway.store.redis import RedisStore
from tests.redis_server import RedisServer, RedisTarget, free_port

from .contract import T0, make_event, record, rr


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own: it gets killed."""
    with tempfile.TemporaryDirectory(prefix="leadgate-redis-kill-") as tmp:
        server = RedisServer(free_port(), Path(tmp)).start()
        try:
            yield server
        finally:
            server.stop()


def store_on(url: str, prefix: str = "lg:") -> RedisStore:
    client = redis.asyncio.Redis.from_url(
        url, decode_responses=True, socket_timeout=2, socket_connect_timeout=1
    )
    return RedisStore(client, prefix=prefix)


async def test_acknowledged_events_survive_a_killed_server(own_server: RedisServer) -> None:
    store = store_on(own_server.url)
    await store.open()
    events = [make_event(f"k{n}", phone=f"+7903{n % 40:07d}") for n in range(400)]
    acknowledged: dict[str, Recorded] = {}
    refused: list[str] = []
    enough = asyncio.Event()

    async def sender(batch: list[Any]) -> None:
        for event in batch:
            try:
                acknowledged[event.external_id] = await record(
                    store, event, assignment=rr("anna", "boris")
                )
            except StoreUnavailable:
                refused.append(event.external_id)
            if len(acknowledged) >= 150:
                enough.set()

    async def killer() -> None:
        await enough.wait()
        own_server.kill()

    await asyncio.gather(killer(), *(sender(events[i::4]) for i in range(4)))
    await store.close()
    assert 150 <= len(acknowledged) < len(events)
    assert refused  # the ones sent while the server was down were not acknowledged

    own_server.start()  # the same directory: Redis reads its AOF back
    store = store_on(own_server.url)
    await store.open()
    try:
        for receipt in (r.receipt for r in acknowledged.values()):
            stored = await store.get_event(receipt.event_id)
            assert stored is not None and stored.lead_id == receipt.lead_id
        # The senders retry everything: nothing acknowledged is stored twice, and the
        # people stay one lead each.
        for event in events:
            again = await record(store, event, assignment=rr("anna", "boris"))
            if event.external_id in acknowledged:
                first = acknowledged[event.external_id].receipt
                assert again.receipt.outcome is Outcome.REPLAYED
                assert (again.receipt.event_id, again.receipt.lead_id) == (
                    first.event_id,
                    first.lead_id,
                )
        leads = await store.list_leads(LeadQuery(limit=1000))
        assert len(leads) == 40
        counts = await store.assignment_counts(T0.date())
        assert sum(counts.values()) == 40 and abs(counts["anna"] - counts["boris"]) <= 1
    finally:
        await store.close()


class LosingPipeline(Pipeline):
    """EXEC lands, then the connection dies before the reply arrives."""

    lose: list[bool]

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        exec_sent = self.explicit_transaction  # MULTI … EXEC, not a batch of reads
        result: list[Any] = await super().execute(raise_on_error)
        if exec_sent and self.lose and self.lose.pop():
            raise WatchError("A ConnectionError occurred while watching one or more keys")
        return result


class LosingRedis(redis.asyncio.Redis):
    lose: list[bool]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        pipe = LosingPipeline(self.connection_pool, self.response_callbacks, transaction, None)
        pipe.lose = self.lose
        return pipe


async def test_a_reply_lost_after_the_write_landed(redis_target: RedisTarget) -> None:
    client = LosingRedis.from_url(redis_target.url, decode_responses=True)
    client.lose = []
    store = RedisStore(client, prefix=redis_target.prefix)
    await store.open()
    try:
        client.lose.append(True)
        event = make_event("lost-1", phone="+79030000001")
        first = await record(store, event, assignment=rr("anna"))
        assert first.receipt.outcome is Outcome.CREATED
        assert first.assignment == Assignment("anna", "round_robin")
        client.lose.append(True)
        merged = await record(store, make_event("lost-2", phone="+79030000001"))
        assert (merged.receipt.outcome, merged.receipt.lead_id) == (
            Outcome.MERGED,
            first.receipt.lead_id,
        )
        lead = await store.get_lead(first.receipt.lead_id or "")
        assert lead is not None and [e.external_id for e in lead.events] == ["lost-1", "lost-2"]
        assert await store.assignment_counts(T0.date()) == {"anna": 1}
        # A real replay is still a replay.
        again = await record(store, make_event("lost-1", phone="+79030000001"))
        assert again.receipt.outcome is Outcome.REPLAYED
    finally:
        await store.close()
