"""Background tasks under supervision: restarted when they fail, singletons behind a lease.

Every TaskSpec (a connector's poller, the outbox worker) runs until the app stops. One that
raises is logged (masked), counted in `leadgate_task_restarts_total{task}` and started again
after a backoff that doubles from `backoff_initial` to `backoff_max`, and starts over once
the task ran `healthy_after` seconds without failing. While it waits to restart, /readyz
names it. A task that returns is restarted the same way: tasks run until cancelled.

A singleton task runs only while this process holds the coordination lease
`task:<name>`: acquired before the task starts, renewed every third of its duration,
released at shutdown. A renewal that fails (the lease expired, another replica took it,
the coordinator is unreachable) cancels the task at once, and the supervisor goes back to
acquiring. In-process coordination always grants the lease, so one process runs every task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from gateway.channels import TaskSpec
from gateway.coordination import Coordination, Lease
from gateway.i18n import N_
from gateway.identity import mask_text
from gateway.metrics import Metrics
from gateway.redact import redact
from gateway.texts import Text, joined

log = logging.getLogger(__name__)

LEASE_PREFIX = "task:"
_URL_PATH = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s'\"]+)/[^\s'\"]*", re.IGNORECASE)


class TaskState(StrEnum):
    STARTING = "starting"
    WAITING = "waiting"  # a singleton whose lease another replica holds
    RUNNING = "running"
    RESTARTING = "restarting"  # failed; waiting out its backoff
    STOPPED = "stopped"


@dataclass(slots=True)
class TaskStatus:
    state: TaskState = TaskState.STARTING
    restarts: int = 0
    last_error: str | None = None
    restart_at: float | None = None  # on the supervisor's clock, while RESTARTING
    # A singleton that cannot reach the coordinator to take its lease: why.
    coordination_error: str | None = None


def describe(exc: BaseException) -> str:
    """An exception as one masked line: no phone, no email, no URL path (webhook URLs carry
    their secret in the path)."""
    return _mask(f"{type(exc).__name__}: {exc}")[:300]


def mask_details(text: str) -> str:
    """Masked like a log line, URL paths cut (a webhook URL's path is its secret), and every
    registered secret removed in any spelling (a CRM's error may echo a piece of one)."""
    return mask_text(redact(_URL_PATH.sub(r"\1/…", text)))


_mask = mask_details


class Supervisor:
    def __init__(
        self,
        coordination: Coordination,
        metrics: Metrics,
        *,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        healthy_after: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.coordination = coordination
        self.metrics = metrics
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.healthy_after = healthy_after
        self._clock = clock
        self._sleep = sleep
        self.specs: dict[str, TaskSpec] = {}
        self.status: dict[str, TaskStatus] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, spec: TaskSpec) -> None:
        if spec.name in self.specs:
            raise ValueError(f"two background tasks are named {spec.name!r}")
        if spec.lease_seconds <= 0:
            raise ValueError(f"task {spec.name!r}: lease_seconds must be positive")
        self.specs[spec.name] = spec
        self.status[spec.name] = TaskStatus()

    def start(self) -> None:
        for spec in self.specs.values():
            body = self._singleton(spec) if spec.singleton else self._keep_running(spec)
            self._tasks.append(asyncio.create_task(body, name=f"task:{spec.name}"))

    async def stop(self) -> None:
        """Cancel every task and wait for it (singletons release their leases on the way)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for status in self.status.values():
            status.state = TaskState.STOPPED

    # --- what ops see -------------------------------------------------------------------

    def problem(self) -> str | None:
        """For /readyz: the tasks that are down, in words; None when all run (or wait their
        turn for a lease, which is normal on all replicas but one)."""
        problems: list[str] = []
        now = self._clock()
        for name, status in self.status.items():
            if status.state is TaskState.RESTARTING and status.restart_at is not None:
                problems.append(
                    Text(
                        N_(
                            "{task} упала ({error}), перезапусков: {restarts}; "
                            "следующий запуск через {seconds} с"
                        ),
                        task=name,
                        error=status.last_error,
                        restarts=status.restarts,
                        seconds=f"{max(0.0, status.restart_at - now):.0f}",
                    )
                )
            elif status.state is TaskState.WAITING and status.coordination_error is not None:
                problems.append(
                    Text(
                        N_("{task} не запущена: {error}"),
                        task=name,
                        error=status.coordination_error,
                    )
                )
        return joined(problems)

    # --- running and restarting ---------------------------------------------------------

    async def _keep_running(self, spec: TaskSpec) -> None:
        status = self.status[spec.name]
        failures = 0
        while True:
            status.state = TaskState.RUNNING
            status.restart_at = None
            started = self._clock()
            try:
                await spec.run()
                why = "it returned (a task runs until the app stops)"
                log.error("task %s ended: %s; restarting it", spec.name, why)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                why = describe(exc)
                trace = "".join(traceback.format_exception(exc)).rstrip()
                log.error("task %s failed; restarting it\n%s", spec.name, _mask(trace))
            if self._clock() - started >= self.healthy_after:
                failures = 0  # it ran fine for a while: this is a new trouble, start small
            failures += 1
            delay = min(self.backoff_max, self.backoff_initial * 2.0 ** (failures - 1))
            status.state = TaskState.RESTARTING
            status.last_error = why
            status.restarts += 1
            status.restart_at = self._clock() + delay
            self.metrics.task_restarted(spec.name)
            await self._sleep(delay)

    async def _singleton(self, spec: TaskSpec) -> None:
        status = self.status[spec.name]
        lease_name = LEASE_PREFIX + spec.name
        while True:
            try:
                lease = await self.coordination.acquire(lease_name, spec.lease_seconds)
            except Exception as exc:
                status.state = TaskState.WAITING
                status.coordination_error = f"cannot take its lease: {describe(exc)}"
                log.warning("task %s: %s", spec.name, status.coordination_error)
                await self._sleep(spec.lease_seconds / 3)
                continue
            status.coordination_error = None
            if lease is None:
                status.state = TaskState.WAITING
                await self._sleep(spec.lease_seconds / 3)
                continue
            log.info("task %s: lease taken; running it here", spec.name)
            try:
                await self._hold(spec, lease)
            finally:
                # Ours no more after a lost renewal (then this is a no-op); at shutdown it
                # lets another replica take over at once instead of after the lease expires.
                with contextlib.suppress(Exception):
                    await self.coordination.release(lease)

    async def _hold(self, spec: TaskSpec, lease: Lease) -> None:
        """Run the task while renewing its lease; return when the lease is lost."""
        body = asyncio.create_task(self._keep_running(spec), name=f"task:{spec.name}:run")
        try:
            while True:
                done, _ = await asyncio.wait({body}, timeout=lease.ttl / 3)
                if done:  # _keep_running never returns: only a bug in it gets here
                    body.result()
                    return
                try:
                    kept = await self.coordination.renew(lease)
                    why = "it expired or another replica took it"
                except Exception as exc:
                    kept, why = False, describe(exc)
                if not kept:
                    log.warning("task %s: lease lost (%s); stopping it here", spec.name, why)
                    self.status[spec.name].state = TaskState.WAITING
                    await _cancel(body)
                    return
        except asyncio.CancelledError:
            await _cancel(body)
            raise


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # we are being cancelled ourselves, not just seeing the task's end
