"""The store contract suite: every test here runs once per Store implementation.

A test takes the `store` fixture (a Store, opened on fresh data) and uses nothing but the
Store protocol; a test that needs to restart the store or break a write takes `harness`.

To run the suite against another implementation, add its factory to FACTORIES: an async
context manager that, given a fresh temporary directory, opens that store on data of its
own and yields a Harness for it (closing and cleaning up afterwards).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from gateway.assign import Assignment
from gateway.store.base import PersonMatch, Plan, Planner, Store
from gateway.store.redis import RedisStore
from gateway.store.redis_match import DayState, Decision
from gateway.store.sqlite import SQLiteStore
from tests.redis_server import RedisTarget, shared_session


class Harness(Protocol):
    """One store under test, with the few levers the contract needs beyond the protocol."""

    store: Store

    async def reopen(self) -> Store:
        """Close the store and open a new one on the same data: a restart. Sets `store`."""

    async def fail_writes_of(self, external_id: str) -> None:
        """Make every write that carries the event with this external id fail (a disk error,
        a lost connection): record() raises StoreUnavailable and nothing of it is kept."""

    async def heal(self) -> None:
        """Undo fail_writes_of()."""

    def redecide(self, times: Callable[[], int]) -> None:
        """Make the store decide each event `times()` times before it applies one decision,
        as a store retrying an optimistic transaction does (Redis: WATCH/MULTI on conflict)."""


# --- SQLite ----------------------------------------------------------------------------------


class RedecidingSQLiteStore(SQLiteStore):
    """SQLiteStore whose decision step runs as often as a retrying store's would. Every
    attempt must decide the same: the plan, the seller and the day it counts in."""

    times: Callable[[], int] = staticmethod(lambda: 1)
    attempts = 0

    def _decide(self, *args: Any) -> tuple[Plan, Assignment | None, date | None]:
        first = super()._decide(*args)
        self.attempts += 1
        for _ in range(self.times() - 1):
            again = super()._decide(*args)
            self.attempts += 1
            assert again == first, f"a retry decided otherwise: {first} then {again}"
        return first


class SQLiteHarness:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "leadgate.db"
        self.store: RedecidingSQLiteStore = RedecidingSQLiteStore(self.path)
        self._times: Callable[[], int] = lambda: 1

    async def reopen(self) -> Store:
        await self.store.close()
        self.store = RedecidingSQLiteStore(self.path)
        self.store.times = self._times
        await self.store.open()
        return self.store

    async def fail_writes_of(self, external_id: str) -> None:
        with contextlib.closing(sqlite3.connect(self.path, timeout=5)) as db:
            db.execute(
                "CREATE TRIGGER fail_writes_of BEFORE INSERT ON events"
                f" WHEN NEW.external_id = '{external_id}'"
                " BEGIN SELECT RAISE(ABORT, 'disk I/O error (simulated)'); END"
            )
            db.commit()

    async def heal(self) -> None:
        with contextlib.closing(sqlite3.connect(self.path, timeout=5)) as db:
            db.execute("DROP TRIGGER IF EXISTS fail_writes_of")
            db.commit()

    def redecide(self, times: Callable[[], int]) -> None:
        self._times = times
        self.store.times = times


@contextlib.asynccontextmanager
async def sqlite_harness(directory: Path) -> AsyncIterator[Harness]:
    harness = SQLiteHarness(directory)
    await harness.store.open()
    try:
        yield harness
    finally:
        await harness.store.close()


# --- Redis ------------------------------------------------------------------------------------


class FailingPipeline(Pipeline):
    """A transaction that carries a doomed event is lost on the way, as with a connection
    that drops: nothing of it reaches the server."""

    doomed: set[str]

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        for args, _ in self.command_stack:
            for arg in args:
                text = arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)
                if any(f'"external_id":"{ext}"' in text for ext in self.doomed):
                    raise redis.ConnectionError("connection lost (simulated)")
        return await super().execute(raise_on_error)


class FailingRedis(aioredis.Redis):
    doomed: set[str]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        pipe = FailingPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        pipe.doomed = self.doomed
        return pipe


class RedecidingRedisStore(RedisStore):
    """RedisStore that decides each event `times()` times and loses the race `times() - 1`
    times first: each of those attempts aborts at EXEC as if another replica had changed
    a watched key, and the event is read and decided again. Only the last one commits."""

    times: Callable[[], int] = staticmethod(lambda: 1)
    attempts = 0

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._conflicts: dict[str, int] = {}

    def _decide(
        self, plan: Planner, found: PersonMatch, state: DayState, received_at: Any
    ) -> Decision:
        first = super()._decide(plan, found, state, received_at)
        self.attempts += 1
        for _ in range(self.times() - 1):
            again = super()._decide(plan, found, state, received_at)
            self.attempts += 1
            assert again == first, f"a retry decided otherwise: {first} then {again}"
        return first

    async def _commit(self, pipe: Pipeline, event: Any = None) -> None:
        if event is not None:
            left = self._conflicts.setdefault(event.id, self.times() - 1)
            if left > 0:
                self._conflicts[event.id] = left - 1
                raise WatchError("lost the race (simulated)")
        await super()._commit(pipe, event)


class RedisHarness:
    def __init__(self, target: RedisTarget) -> None:
        self.target = target
        self.doomed: set[str] = set()
        self._times: Callable[[], int] = lambda: 1
        self.store = self._open()

    def _open(self) -> RedecidingRedisStore:
        client = FailingRedis.from_url(self.target.url, decode_responses=True)
        client.doomed = self.doomed
        store = RedecidingRedisStore(client, prefix=self.target.prefix)
        store.times = self._times
        return store

    async def reopen(self) -> Store:
        await self.store.close()
        self.store = self._open()
        await self.store.open()
        return self.store

    async def fail_writes_of(self, external_id: str) -> None:
        self.doomed.add(external_id)

    async def heal(self) -> None:
        self.doomed.clear()

    def redecide(self, times: Callable[[], int]) -> None:
        self._times = times
        self.store.times = times


@contextlib.asynccontextmanager
async def redis_harness(directory: Path) -> AsyncIterator[Harness]:
    harness = RedisHarness(shared_session().target())
    await harness.store.open()
    try:
        yield harness
    finally:
        await harness.store.close()
        harness.target.cleanup()


FACTORIES: dict[str, Callable[[Path], contextlib.AbstractAsyncContextManager[Harness]]] = {
    "sqlite": sqlite_harness,
    "redis": redis_harness,
}


@pytest.fixture(params=sorted(FACTORIES))
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    async with FACTORIES[request.param](tmp_path) as h:
        yield h


@pytest.fixture
def store(harness: Harness) -> Store:
    return harness.store
