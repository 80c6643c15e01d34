"""The outbox worker wakes on commit and keeps several sink calls in flight, a lead in one.

Delivery latency (a new lead reaching the CRM well within a second) rests on two things
checked here without timing anything: the worker starts a delivery when a lead commits,
not at its next poll; and a slow CRM does not serialize delivery, while each lead's
events still reach the sink in order and exactly once.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from b24_standin import Bitrix24StandIn
from conftest import make_settings
from helpers import ORDER_AUTH, fast_delivery, order, phone, standin, until
from prometheus_client import CollectorRegistry
from store_view import outbox_of

from gateway.delivery.metrics import DeliveryMetrics
from gateway.delivery.sink import Delivery, Result, Status
from gateway.delivery.worker import OutboxWorker
from gateway.keys import PIPELINE, STORE
from gateway.store.sqlite import SQLiteStore
from gateway.web import create_app

__all__ = ["standin"]

Client = TestClient[Any, Any]


class GatedSink:
    """Records every call; each call waits for the test (or a random moment) to answer."""

    name = "gated"
    marks_attempts = True

    def __init__(self, *, gated: bool = True, rng: random.Random | None = None) -> None:
        self.gated = gated
        self.rng = rng
        self.calls: list[list[Delivery]] = []
        self.gates: list[asyncio.Event] = []
        self.entered = asyncio.Condition()
        self.in_flight = 0
        self.most_in_flight = 0
        self.steps: list[tuple[str, int]] = []  # ("start" | "end", call number), in order

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ready(self) -> None:
        return None

    async def deliver(self, batch: Sequence[Delivery]) -> list[Result]:
        gate = asyncio.Event()
        number = len(self.calls)
        self.steps.append(("start", number))
        self.calls.append(list(batch))
        self.gates.append(gate)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        async with self.entered:
            self.entered.notify_all()
        try:
            if self.gated:
                await gate.wait()
            elif self.rng is not None:
                await asyncio.sleep(self.rng.random() * 0.01)
        finally:
            self.in_flight -= 1
            self.steps.append(("end", number))
        return [Result(d.item.id, Status.DELIVERED, remote_id=f"r{d.item.id}") for d in batch]

    async def calls_reach(self, n: int) -> None:
        async with self.entered:
            await asyncio.wait_for(self.entered.wait_for(lambda: len(self.calls) >= n), 10)


@pytest.fixture
async def quiet_app(aiohttp_client: Callable[..., Any], tmp_path: Path) -> Client:
    """A gateway whose own worker sleeps; its outbox rows stay pending for ours."""
    settings = make_settings(tmp_path, delivery={"poll_seconds": 60})
    store = SQLiteStore(settings.store.path, outbox_delivered=False)
    client: Client = await aiohttp_client(create_app(settings, store=store))
    return client


def lanes_worker(client: Client, sink: GatedSink, **settings: Any) -> OutboxWorker:
    delivery = make_settings(
        Path("/nonexistent"), delivery={"poll_seconds": 0.02, **settings}
    ).delivery
    metrics = DeliveryMetrics(CollectorRegistry(), sink.name)
    return OutboxWorker(client.app[STORE], sink, delivery, metrics, owner="lanes")


async def post(client: Client, n: int, tel: str) -> str:
    resp = await client.post("/v1/orders", json=order(n, tel), headers=ORDER_AUTH)
    assert resp.status == 201, await resp.text()
    lead_id: str = (await resp.json())["lead_id"]
    return lead_id


async def test_a_new_lead_is_sent_on_commit_not_at_the_next_poll(
    aiohttp_client: Callable[..., Any], tmp_path: Path, standin: Bitrix24StandIn
) -> None:
    # A poll of a minute: only the wake on commit can deliver within the test's 10 s.
    delivery = fast_delivery(standin.webhook_url) | {"poll_seconds": 60}
    client = await aiohttp_client(create_app(make_settings(tmp_path, delivery=delivery)))
    first = await post(client, 1, phone(1))
    await until(lambda: first in standin.by_origin())
    # The worker found nothing more and rests for a minute now; a new lead wakes it.
    await asyncio.sleep(0.1)
    second = await post(client, 2, phone(2))
    await until(lambda: second in standin.by_origin())
    assert all(len(ids) == 1 for ids in standin.by_origin().values())


async def test_a_local_sink_is_not_woken_per_lead(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    # Its rows are born delivered: waking it would cost the hot path a claim per lead.
    client = await aiohttp_client(create_app(make_settings(tmp_path)))
    assert client.app[PIPELINE]._on_commit == []


async def test_a_lead_waits_for_its_own_lane_while_others_pass(
    quiet_app: Client, tmp_path: Path
) -> None:
    sink = GatedSink()
    worker = lanes_worker(quiet_app, sink, concurrency=2)
    quiet_app.app[PIPELINE].on_commit(worker.stored)
    running = asyncio.create_task(worker.run())
    try:
        lead_a = await post(quiet_app, 1, phone(1))
        await sink.calls_reach(1)  # A's create is in the sink and stays there
        assert [d.item.lead_id for d in sink.calls[0]] == [lead_a]
        assert await post(quiet_app, 2, phone(1)) == lead_a  # a second order of A: a merge
        lead_b = await post(quiet_app, 3, phone(2))
        await sink.calls_reach(2)
        # B went while A's create was still in flight; A's merge did not.
        assert [d.item.lead_id for d in sink.calls[1]] == [lead_b]
        assert sink.most_in_flight == 2
        await asyncio.sleep(0.1)  # several polls: A's merge still waits for A's lane
        assert len(sink.calls) == 2
        sink.gates[0].set()
        await sink.calls_reach(3)
        assert [(d.item.lead_id, d.item.kind) for d in sink.calls[2]] == [(lead_a, "lead.merged")]
        for gate in sink.gates:
            gate.set()
        await until(lambda: _all_delivered(tmp_path))
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_many_lanes_keep_each_lead_in_order_and_every_item_once(
    quiet_app: Client, tmp_path: Path
) -> None:
    sink = GatedSink(gated=False, rng=random.Random(18))
    worker = lanes_worker(quiet_app, sink, concurrency=4, batch_size=3)
    quiet_app.app[PIPELINE].on_commit(worker.stored)
    running = asyncio.create_task(worker.run())
    try:
        shuffle = random.Random(7)
        people = list(range(12)) * 4  # 12 people, 4 orders each: a create and 3 merges
        shuffle.shuffle(people)
        for n, person in enumerate(people):
            await post(quiet_app, n, phone(person))
            await asyncio.sleep(0.002 * shuffle.random())
        await until(lambda: _all_delivered(tmp_path, 48))
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    sent = [d.item.id for call in sink.calls for d in call]
    assert sorted(sent) == sorted(set(sent)) and len(sent) == 48  # each item exactly once
    position = {item_id: i for i, item_id in enumerate(sent)}
    call_of = {d.item.id: c for c, call in enumerate(sink.calls) for d in call}
    by_lead: dict[str, list[int]] = {}
    for item in await outbox_of(tmp_path / "leadgate.db"):
        by_lead.setdefault(item.lead_id, []).append(item.id)
    assert len(by_lead) == 12
    step = {s: i for i, s in enumerate(sink.steps)}
    for ids in by_lead.values():
        # Per lead: sent in the order the events were stored...
        assert sorted(ids, key=position.__getitem__) == sorted(ids)
        # ...and never in two calls at once: each of its calls ended before the next began.
        calls = sorted({call_of[i] for i in ids})
        for earlier, later in itertools.pairwise(calls):
            assert step[("end", earlier)] < step[("start", later)]
    assert sink.most_in_flight > 1  # lanes did run side by side


async def _all_delivered(tmp_path: Path, count: int | None = None) -> bool:
    rows = await outbox_of(tmp_path / "leadgate.db")
    if count is not None and len(rows) != count:
        return False
    return bool(rows) and all(r.state == "delivered" for r in rows)


class ThrottledSink(GatedSink):
    """Asks for a rest of a minute on every call (a 503 with Retry-After: 60)."""

    async def deliver(self, batch: Sequence[Delivery]) -> list[Result]:
        self.calls.append(list(batch))
        return [Result(d.item.id, Status.THROTTLE, error="busy", retry_after=60) for d in batch]


async def test_a_new_lead_does_not_cut_a_rest_the_sink_asked_for(quiet_app: Client) -> None:
    sink = ThrottledSink()
    worker = lanes_worker(quiet_app, sink)
    quiet_app.app[PIPELINE].on_commit(worker.stored)
    running = asyncio.create_task(worker.run())
    try:
        await post(quiet_app, 1, phone(1))
        await until(lambda: len(sink.calls) == 1)
        for n in range(2, 5):  # new leads wake the worker; it keeps resting
            await post(quiet_app, n, phone(n))
        await asyncio.sleep(0.2)  # ten polls' worth
        assert len(sink.calls) == 1
        worker.wake()  # an operator's retry does cut it short
        await until(lambda: len(sink.calls) == 2)
        # The three new leads; the first is due when its minute is over.
        assert len(sink.calls[1]) == 3
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


class FirstRetrySink(GatedSink):
    """The first call fails (a retry with backoff); every later one goes through."""

    async def deliver(self, batch: Sequence[Delivery]) -> list[Result]:
        self.calls.append(list(batch))
        status = Status.RETRY if len(self.calls) == 1 else Status.DELIVERED
        return [Result(d.item.id, status, error=f"scripted {status.value}") for d in batch]


async def test_a_newer_event_does_not_overtake_its_leads_retry(
    quiet_app: Client, tmp_path: Path
) -> None:
    sink = FirstRetrySink()
    worker = lanes_worker(quiet_app, sink, backoff_initial_seconds=0.3, backoff_max_seconds=0.3)
    quiet_app.app[PIPELINE].on_commit(worker.stored)
    running = asyncio.create_task(worker.run())
    try:
        lead = await post(quiet_app, 1, phone(1))
        await until(lambda: len(sink.calls) == 1)  # the create failed: backing off
        assert await post(quiet_app, 2, phone(1)) == lead  # a merge, due at once
        await until(lambda: _all_delivered(tmp_path, 2))
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    # The merge waited for the create's retry and went with it, after it.
    assert [[d.item.kind for d in call] for call in sink.calls] == [
        ["lead.created"],
        ["lead.created", "lead.merged"],
    ]
