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

from gateway.assign import Assignment
from gateway.store.base import Plan, Store
from gateway.store.sqlite import SQLiteStore


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


FACTORIES: dict[str, Callable[[Path], contextlib.AbstractAsyncContextManager[Harness]]] = {
    "sqlite": sqlite_harness,
}


@pytest.fixture(params=sorted(FACTORIES))
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    async with FACTORIES[request.param](tmp_path) as h:
        yield h


@pytest.fixture
def store(harness: Harness) -> Store:
    return harness.store
