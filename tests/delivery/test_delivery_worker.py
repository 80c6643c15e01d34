"""The outbox worker's bookkeeping, with a scripted sink over the real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import make_settings
from helpers import ORDER_AUTH, order, states, until_outbox
from prometheus_client import CollectorRegistry
from store_view import outbox_of

from gateway.delivery.metrics import DeliveryMetrics
from gateway.delivery.sink import Delivery, Result, Status
from gateway.delivery.worker import OutboxWorker, backoff
from gateway.keys import STORE
from gateway.store.base import OutboxItem
from gateway.store.sqlite import SQLiteStore
from gateway.web import create_app

Client = TestClient[Any, Any]


class ScriptedSink:
    name = "scripted"
    marks_attempts = True

    def __init__(self, *answers: Status | Exception, retry_after: float | None = None) -> None:
        self.answers = list(answers)
        self.retry_after = retry_after
        self.seen: list[list[Delivery]] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ready(self) -> None:
        return None

    async def deliver(self, batch: Sequence[Delivery]) -> list[Result]:
        self.seen.append(list(batch))
        answer = self.answers.pop(0) if self.answers else Status.DELIVERED
        if isinstance(answer, Exception):
            raise answer
        return [
            Result(
                d.item.id, answer, error=f"scripted {answer.value}", retry_after=self.retry_after
            )
            for d in batch
        ]


@pytest.fixture
async def quiet_app(aiohttp_client: Callable[..., Any], tmp_path: Path) -> Client:
    """A gateway whose own worker sleeps, so the test drives a worker by hand.

    Its store keeps outbox rows pending, as it does for a remote sink (with the local
    sink they are born delivered)."""
    settings = make_settings(tmp_path, delivery={"poll_seconds": 60})
    store = SQLiteStore(settings.store.path, outbox_delivered=False)
    client: Client = await aiohttp_client(create_app(settings, store=store))
    return client


def worker_for(
    client: Client, sink: ScriptedSink | SlowSink, owner: str = "worker-a", **settings: Any
) -> OutboxWorker:
    delivery = make_settings(
        Path("/nonexistent"), delivery={"max_attempts": 3, **settings}
    ).delivery
    metrics = DeliveryMetrics(CollectorRegistry(), sink.name)
    return OutboxWorker(client.app[STORE], sink, delivery, metrics, owner=owner, rng=lambda: 0.5)


async def first_row(tmp_path: Path) -> OutboxItem:
    return (await outbox_of(tmp_path / "leadgate.db"))[0]


async def post_one(client: Client, n: int = 1) -> None:
    resp = await client.post("/v1/orders", json=order(n, "+7 916 123-45-67"), headers=ORDER_AUTH)
    assert resp.status == 201


def test_backoff_doubles_with_equal_jitter_and_a_cap() -> None:
    for attempt in range(1, 12):
        full = min(900.0, 2.0 * 2 ** (attempt - 1))
        assert backoff(attempt, 2.0, 900.0, lambda: 0.0) == pytest.approx(full / 2)
        assert backoff(attempt, 2.0, 900.0, lambda: 1.0) == pytest.approx(full)
    assert backoff(30, 2.0, 900.0, lambda: 1.0) == 900.0


async def test_local_sink_rows_are_born_delivered(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await aiohttp_client(create_app(make_settings(tmp_path)))  # default: local sink
    await post_one(client)
    rows = await until_outbox(tmp_path / "leadgate.db", lambda rows: states(rows) == ["delivered"])
    assert rows[0].attempted is False  # nothing left the process: no trace needed


async def test_retry_counts_an_attempt_and_backs_off(quiet_app: Client, tmp_path: Path) -> None:
    await post_one(quiet_app)
    sink = ScriptedSink(Status.RETRY)
    worker = worker_for(quiet_app, sink, backoff_initial_seconds=10)
    before = datetime.now(UTC)
    assert await worker.run_once() == 0
    row = await first_row(tmp_path)
    assert (row.state, row.attempts, row.attempted) == ("pending", 1, True)
    assert row.last_error == "scripted retry"
    assert row.claimed_by is None  # the outcome ended the claim: due again when it is time
    delay = (row.next_attempt_at - before).total_seconds()
    assert 7.0 <= delay <= 11.0  # 10 s with rng 0.5 -> 7.5 s
    assert not sink.seen[0][0].maybe_sent  # the first try: nothing to look up
    assert worker.problem() is not None and "scripted retry" in (worker.problem() or "")


async def test_exhausted_retries_go_dead(quiet_app: Client, tmp_path: Path) -> None:
    await post_one(quiet_app)
    sink = ScriptedSink(Status.RETRY, Status.RETRY, Status.RETRY)
    worker = worker_for(quiet_app, sink, backoff_initial_seconds=0.001, backoff_max_seconds=0.001)
    for _ in range(3):
        await asyncio.sleep(0.01)  # past the (1 ms) backoff
        await worker.run_once()
    row = await first_row(tmp_path)
    assert (row.state, row.attempts) == ("dead", 3)
    assert row.last_error == "gave up after 3 attempts: scripted retry"
    assert [d[0].maybe_sent for d in sink.seen] == [False, True, True]


@pytest.mark.parametrize("status", [Status.WAIT, Status.THROTTLE, Status.HALT])
async def test_no_attempt_is_used_when_the_sink_did_nothing(
    quiet_app: Client, tmp_path: Path, status: Status
) -> None:
    await post_one(quiet_app)
    sink = ScriptedSink(status, retry_after=0.25)
    worker = worker_for(quiet_app, sink)
    pause = await worker.run_once()
    row = await first_row(tmp_path)
    assert (row.state, row.attempts) == ("pending", 0)
    assert row.attempted is False  # the flag is put back: no look-up needed next time
    if status is Status.THROTTLE:
        assert pause == pytest.approx(0.25)
    if status is Status.HALT:
        assert pause == worker.settings.halt_probe_seconds
        assert "refused our credentials" in (worker.problem() or "")
        assert await worker.run_once() > 0  # resting until the probe: the sink is not asked
        assert len(sink.seen) == 1


async def test_permanent_failure_is_dead_at_once(quiet_app: Client, tmp_path: Path) -> None:
    await post_one(quiet_app)
    worker = worker_for(quiet_app, ScriptedSink(Status.DEAD))
    await worker.run_once()
    row = await first_row(tmp_path)
    assert (row.state, row.attempts, row.last_error) == ("dead", 1, "scripted dead")


async def test_a_sink_that_raises_is_a_transient_failure(quiet_app: Client, tmp_path: Path) -> None:
    await post_one(quiet_app)
    worker = worker_for(quiet_app, ScriptedSink(RuntimeError("boom")))
    await worker.run_once()
    row = await first_row(tmp_path)
    assert (row.state, row.attempts) == ("pending", 1)
    assert row.last_error == "scripted: RuntimeError: boom"


async def test_delivered_rows_are_purged_after_the_retention(
    quiet_app: Client, tmp_path: Path
) -> None:
    await post_one(quiet_app)
    worker = worker_for(quiet_app, ScriptedSink(Status.DELIVERED), keep_delivered_days=1)
    await worker.run_once()
    assert states(await outbox_of(tmp_path / "leadgate.db")) == ["delivered"]
    worker._now = lambda: datetime.now(UTC) + timedelta(days=2)
    await worker.run_once()  # idle cycle: purges once an hour
    assert await outbox_of(tmp_path / "leadgate.db") == []


class SlowSink(ScriptedSink):
    """Answers only when the test lets it: a sink call outliving its claim."""

    def __init__(self, *answers: Status | Exception) -> None:
        super().__init__(*answers)
        self.entered = asyncio.Event()
        self.go = asyncio.Event()

    async def deliver(self, batch: Sequence[Delivery]) -> list[Result]:
        self.entered.set()
        await self.go.wait()
        return await super().deliver(batch)


async def test_a_claim_is_not_taken_while_held_and_a_late_outcome_is_refused(
    quiet_app: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await post_one(quiet_app)
    slow = SlowSink(Status.RETRY)
    held = worker_for(quiet_app, slow, owner="worker-a", claim_lease_seconds=0.3)
    running = asyncio.create_task(held.run_once())
    await slow.entered.wait()
    row = await first_row(tmp_path)
    assert row.claimed_by == "worker-a" and row.claimed_until is not None

    other_sink = ScriptedSink(Status.DELIVERED)
    other = worker_for(quiet_app, other_sink, owner="worker-b", claim_lease_seconds=0.3)
    await other.run_once()
    assert other_sink.seen == []  # held by worker-a: not sent a second time

    await asyncio.sleep(0.35)  # worker-a's claim runs out while its sink still works
    await other.run_once()
    assert len(other_sink.seen) == 1 and other_sink.seen[0][0].maybe_sent  # taken over
    assert (await first_row(tmp_path)).state == "delivered"

    slow.go.set()  # worker-a's sink answers at last: "retry"
    await running
    row = await first_row(tmp_path)
    assert (row.state, row.attempts, row.claimed_by) == ("delivered", 1, None)  # b's stands
    assert "taken over by another worker" in caplog.text
