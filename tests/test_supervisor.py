"""The supervisor: failing tasks restart with backoff and show in readiness; singleton tasks
run only under their coordination lease (waiting for it, stopping when it is lost)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from gateway.channels import TaskSpec
from gateway.coordination import InProcessCoordination, Lease
from gateway.metrics import Metrics
from gateway.supervisor import Supervisor, TaskState

PHONE = "+79161234567"
SECRET_URL = "https://portal.bitrix24.ru/rest/1/s3cr3tw3bh00k/crm.lead.add"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def restarts(metrics: Metrics, task: str) -> float:
    value = metrics.registry.get_sample_value("leadgate_task_restarts_total", {"task": task})
    return value or 0.0


async def until(check: Callable[[], bool], what: str, within: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Script:
    """A task body: fails (or returns) as told, call by call, then runs until cancelled."""

    def __init__(self, steps: list[Callable[[], Awaitable[None]]]) -> None:
        self.steps = steps
        self.calls = 0
        self.running = asyncio.Event()
        self.cancelled = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.steps:
            await self.steps.pop(0)()
            return
        self.running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            self.running.clear()
            raise


def fail(message: str = "boom") -> Callable[[], Awaitable[None]]:
    async def step() -> None:
        raise RuntimeError(message)

    return step


def fake_sleeper(clock: Clock, delays: list[float], seen: list[str | None], sup: list[Supervisor]):
    async def sleep(seconds: float) -> None:
        delays.append(seconds)
        seen.append(sup[0].problem())  # what /readyz says while the task is down
        clock.now += seconds
        await asyncio.sleep(0)

    return sleep


# --- restarts and backoff ------------------------------------------------------------------


async def test_a_failing_task_restarts_with_doubling_backoff_and_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, delays, seen, holder = Clock(), [], [], []
    metrics = Metrics()
    sup = Supervisor(
        InProcessCoordination(),
        metrics,
        clock=clock,
        sleep=fake_sleeper(clock, delays, seen, holder),
    )
    holder.append(sup)
    script = Script([fail(f"call from {PHONE} to {SECRET_URL}") for _ in range(9)])
    sup.add(TaskSpec("poller", script, singleton=False))
    with caplog.at_level(logging.ERROR, logger="gateway.supervisor"):
        sup.start()
        await asyncio.wait_for(script.running.wait(), 2)
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]  # doubling, capped at a minute
    assert restarts(metrics, "poller") == 9
    assert sup.status["poller"].restarts == 9
    assert sup.status["poller"].state is TaskState.RUNNING
    assert sup.problem() is None  # running again: nothing to say

    problem = seen[0]
    assert problem is not None
    assert problem.startswith("poller failed (RuntimeError: call from +7")
    assert "restarted 1 time(s); next start in 1 s" in problem
    assert "https://portal.bitrix24.ru/…" in problem
    # Masked: no phone, no secret webhook path, in readiness or in the log.
    for text in (*[s or "" for s in seen], caplog.text):
        assert PHONE not in text and "s3cr3tw3bh00k" not in text
    assert caplog.text.count("task poller failed; restarting it") == 9
    assert "Traceback" in caplog.text  # where it failed is logged, masked
    await sup.stop()
    assert script.cancelled == 1
    assert sup.status["poller"].state is TaskState.STOPPED


async def test_backoff_starts_small_again_after_a_healthy_run() -> None:
    clock, delays, seen, holder = Clock(), [], [], []
    sup = Supervisor(
        InProcessCoordination(),
        Metrics(),
        clock=clock,
        sleep=fake_sleeper(clock, delays, seen, holder),
        healthy_after=60,
    )
    holder.append(sup)

    async def runs_a_while_then_fails() -> None:
        clock.now += 61  # a healthy minute and more
        raise RuntimeError("late failure")

    script = Script([fail(), fail(), fail(), runs_a_while_then_fails, fail()])
    sup.add(TaskSpec("worker", script, singleton=False))
    sup.start()
    await asyncio.wait_for(script.running.wait(), 2)
    assert delays == [1, 2, 4, 1, 2]
    await sup.stop()


async def test_a_task_that_returns_is_restarted_too(caplog: pytest.LogCaptureFixture) -> None:
    clock, delays, seen, holder = Clock(), [], [], []
    metrics = Metrics()
    sup = Supervisor(
        InProcessCoordination(),
        metrics,
        clock=clock,
        sleep=fake_sleeper(clock, delays, seen, holder),
    )
    holder.append(sup)

    async def returns() -> None:
        return None

    script = Script([returns, returns])
    sup.add(TaskSpec("quitter", script, singleton=False))
    sup.start()
    await asyncio.wait_for(script.running.wait(), 2)
    assert delays == [1, 2] and restarts(metrics, "quitter") == 2
    assert seen[0] is not None and "it returned" in seen[0]
    assert "task quitter ended: it returned" in caplog.text
    await sup.stop()


async def test_task_names_are_unique() -> None:
    sup = Supervisor(InProcessCoordination(), Metrics())
    sup.add(TaskSpec("a", Script([]), singleton=False))
    with pytest.raises(ValueError, match="two background tasks are named 'a'"):
        sup.add(TaskSpec("a", Script([]), singleton=True))


# --- singleton tasks and their lease -------------------------------------------------------


def two_replicas(clock: Clock) -> tuple[InProcessCoordination, InProcessCoordination]:
    """Two views of one coordinator, as two replicas would see a shared Redis."""
    ours = InProcessCoordination(owner="replica-a", clock=clock)
    theirs = InProcessCoordination(owner="replica-b", clock=clock)
    theirs._leases = ours._leases
    return ours, theirs


async def test_a_singleton_waits_until_the_lease_held_elsewhere_expires() -> None:
    clock = Clock()
    ours, theirs = two_replicas(clock)
    held = await theirs.acquire("task:mailbox", 10)
    assert held is not None
    sup = Supervisor(ours, Metrics())
    script = Script([])
    sup.add(TaskSpec("mailbox", script, singleton=True, lease_seconds=0.3))
    sup.start()
    await asyncio.sleep(0.5)  # several tries to take the lease
    assert script.calls == 0
    assert sup.status["mailbox"].state is TaskState.WAITING
    assert sup.problem() is None  # waiting one's turn is normal on a standby replica
    assert await ours.holder("task:mailbox") == "replica-b"

    clock.now += 10  # replica b died: its lease runs out
    await asyncio.wait_for(script.running.wait(), 2)
    assert await ours.holder("task:mailbox") == "replica-a"
    assert script.calls == 1

    await sup.stop()
    assert script.cancelled == 1
    assert await theirs.holder("task:mailbox") is None  # released at once for the others


async def test_a_lost_renewal_cancels_the_task_until_the_lease_is_ours_again() -> None:
    clock = Clock()
    ours, theirs = two_replicas(clock)
    sup = Supervisor(ours, Metrics())
    script = Script([])
    sup.add(TaskSpec("mailbox", script, singleton=True, lease_seconds=0.3))
    sup.start()
    await asyncio.wait_for(script.running.wait(), 2)
    await asyncio.sleep(0.35)  # past one lease length: renewals keep it
    assert script.cancelled == 0 and await ours.holder("task:mailbox") == "replica-a"

    # This process stalls past its lease (seen on the coordinator's clock); b takes over.
    clock.now += 1
    taken = await theirs.acquire("task:mailbox", 5)
    assert taken is not None
    await until(lambda: script.cancelled == 1, "the task cancelled on the failed renewal")
    assert not script.running.is_set()
    assert sup.status["mailbox"].state is TaskState.WAITING
    await asyncio.sleep(0.3)
    assert script.calls == 1  # not started again while b holds it

    await theirs.release(taken)
    await asyncio.wait_for(script.running.wait(), 2)
    assert script.calls == 2
    await sup.stop()


class Unreachable(InProcessCoordination):
    async def acquire(self, name: str, ttl: float) -> Lease | None:
        raise ConnectionError("redis://:pa55w0rd@10.0.0.5:6379/0 unreachable")


async def test_a_coordinator_it_cannot_reach_keeps_the_singleton_off_and_says_so() -> None:
    sup = Supervisor(Unreachable(), Metrics())
    script = Script([])
    sup.add(TaskSpec("mailbox", script, singleton=True, lease_seconds=0.3))
    sup.start()
    await until(lambda: sup.problem() is not None, "the problem reported")
    problem = sup.problem()
    assert problem is not None
    assert problem.startswith("mailbox not started: cannot take its lease: ConnectionError")
    assert script.calls == 0
    await sup.stop()


async def test_renewal_errors_count_as_a_lost_lease() -> None:
    class FlakyRenew(InProcessCoordination):
        async def renew(self, lease: Lease) -> bool:
            raise TimeoutError("coordinator did not answer")

    sup = Supervisor(FlakyRenew(), Metrics())
    script = Script([])
    sup.add(TaskSpec("poll", script, singleton=True, lease_seconds=0.3))
    sup.start()
    await asyncio.wait_for(script.running.wait(), 2)
    await until(lambda: script.cancelled >= 1, "the task stopped: we cannot prove we hold it")
    await sup.stop()
