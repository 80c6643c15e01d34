"""Nothing acknowledged is lost, nothing is duplicated: SIGKILL the real server mid-traffic.

The real `leadgate serve` runs as a subprocess on a SQLite file in a temporary directory.
Sixteen clients post distinct orders and forms (forms carry an Idempotency-Key, so they can
be retried like orders) as fast as the server answers; every 2xx receipt is recorded. At a
random moment the server is killed with SIGKILL, then restarted on the same database, and:

- every acknowledged event is stored exactly once, on the lead its receipt named, with its
  replay key and its outbox row; every acknowledged lead exists (also through the HTTP API);
- no order id has two events or two leads; every lead has exactly one creating event;
- the requests that failed or were in flight at the kill are posted again (what a shop's
  retry does), with a sample of acknowledged ones: the acknowledged come back `replayed`
  with the very same receipt, the others end up as exactly one event each.

Three kill cycles run on the same database (the kill point differs each time); at the end
the store holds exactly one event per request ever issued. A second test checks SIGTERM:
a request whose body is still arriving when the signal comes is finished and acknowledged,
and the process exits cleanly.

The outcome does not depend on timing (only which requests are acknowledged does). The
random kill points come from a seed printed in every failure message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from store_view import all_events, all_leads, all_outbox, read

from gateway.models import Channel
from gateway.store.base import EventQuery, Store, StoredEvent
from gateway.store.sqlite import SQLiteStore, StoreRole

ORDERS_TOKEN = "kill-test-orders-token"
ADMIN_TOKEN = "kill-test-admin-token"
WORKERS = 16
CYCLES = 3
START_TIMEOUT = 30.0  # the machine may be busy with other test runs

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_config(directory: Path) -> Path:
    path = directory / "leadgate.toml"
    path.write_text(
        f"""
log_level = "WARNING"

[store]
path = "{directory / "leadgate.db"}"

[orders.tokens]
shop = "{ORDERS_TOKEN}"

[admin.tokens]
ops = "{ADMIN_TOKEN}"

[ratelimit]
requests = 1000000
per_seconds = 1

[[sellers]]
id = "anna"
name = "Анна"
crm_user_id = 1

[[sellers]]
id = "boris"
name = "Борис"
crm_user_id = 2
""",
        encoding="utf-8",
    )
    return path


class Server:
    """`leadgate serve` as a child process; a fresh port for every start."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.config = _write_config(directory)
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, session: aiohttp.ClientSession) -> None:
        self.port = _free_port()
        self.starts += 1
        log = open(self.directory / f"server-{self.starts}.log", "wb")  # noqa: SIM115, ASYNC230
        # `python -c` rather than `-m gateway.cli`: the cli package has no __main__ module.
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; from gateway.cli import main; sys.exit(main())",
            "serve",
            "-c",
            str(self.config),
            "--port",
            str(self.port),
            cwd=self.directory,
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise AssertionError(f"server exited on start: {self.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{self.url}/readyz", timeout=_timeout(2)) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
        raise AssertionError(f"server did not become ready: {self.log_tail()}")

    def log_tail(self) -> str:
        path = self.directory / f"server-{self.starts}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        self.proc = None

    async def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), 20)
        self.proc = None
        return code

    async def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self.proc = None


def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds)


# --- the traffic ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    n: int
    kind: str  # "order" | "form"
    body: dict[str, Any]
    key: str  # order id, or the form's Idempotency-Key

    @property
    def path(self) -> str:
        return "/v1/orders" if self.kind == "order" else "/v1/forms/site"

    @property
    def headers(self) -> dict[str, str]:
        if self.kind == "order":
            return {"Authorization": f"Bearer {ORDERS_TOKEN}"}
        return {"Idempotency-Key": self.key}

    async def stored(self, store: Store) -> StoredEvent | None:
        """The event a replay of this request would answer with, if any is stored."""
        if self.kind == "order":
            # Order ids are scoped by the name of the token that posted them.
            found = await store.list_events(
                EventQuery(channel=Channel.ORDERS, external_id=f"shop:{self.key}", limit=2)
            )
            assert len(found) <= 1, found
            return found[0] if found else None
        return await store.event_for_key(f"form:site:{self.key}")


def _phone(n: int) -> str:
    return f"+7916{n:07d}"


def make_request(n: int) -> Request:
    if n % 3:
        order_id = f"K-{n}"
        body = {
            "order_id": order_id,
            "customer": {"name": f"Покупатель {n}", "phone": _phone(n)},
            "items": [{"sku": "SAW-1", "name": "Пила", "quantity": 1, "price": "1990.00"}],
            "total": "1990.00",
        }
        return Request(n, "order", body, order_id)
    # Every fifth form comes from the person of the request before it: a merge, or a new
    # lead if that one is not stored yet. Either way exactly one event.
    phone = _phone(n - 1 if n % 5 == 0 else n)
    body = {"name": f"Клиент {n}", "phone": phone, "comment": f"заявка {n}"}
    return Request(n, "form", body, f"form-{n}")


@dataclass
class Ledger:
    """What the clients saw: receipts for acknowledged requests, and the rest."""

    acked: dict[int, tuple[Request, dict[str, Any]]] = field(default_factory=dict)
    unacked: dict[int, Request] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)  # answers that must never happen
    issued: int = 0


async def _post(
    session: aiohttp.ClientSession, url: str, req: Request
) -> tuple[int, dict[str, Any] | None]:
    async with session.post(
        url + req.path, json=req.body, headers=req.headers, timeout=_timeout(10)
    ) as resp:
        body = await resp.read()
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        return resp.status, doc if isinstance(doc, dict) else None


async def traffic(
    session: aiohttp.ClientSession,
    url: str,
    ledger: Ledger,
    counter: list[int],
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        counter[0] += 1
        req = make_request(counter[0])
        ledger.issued += 1
        ledger.unacked[req.n] = req  # until a receipt says otherwise
        try:
            status, doc = await _post(session, url, req)
        except (TimeoutError, aiohttp.ClientError, OSError):
            if stop.is_set():
                return
            await asyncio.sleep(0.01)
            continue
        if status in (200, 201) and doc is not None:
            del ledger.unacked[req.n]
            ledger.acked[req.n] = (req, doc)
            if doc.get("outcome") not in ("created", "merged"):
                ledger.bad.append(f"{req.kind} {req.key}: first post answered {doc}")
        elif status != 503:  # 503 means "not stored, retry": anything else is a bug here
            ledger.bad.append(f"{req.kind} {req.key}: {status} {doc}")


# --- the checks -------------------------------------------------------------------------------


async def check_store(db_path: Path, ledger: Ledger, context: str) -> None:
    """The store as the Store protocol shows it, opened beside the server (client role)."""
    store = SQLiteStore(db_path, role=StoreRole.CLIENT)
    await store.open()
    try:
        assert store.integrity_check() == "ok", context
        events = {
            e.record.id: (e.lead_id, e.record.channel, e.record.external_id, e.record.outcome)
            for e in await all_events(store)
        }
        leads = {lead.id for lead in await all_leads(store)}
        outbox: dict[str, int] = {}
        for item in await all_outbox(store):
            outbox[item.event_id] = outbox.get(item.event_id, 0) + 1

        for _n, (req, receipt) in sorted(ledger.acked.items()):
            where = f"{context}: acknowledged {req.kind} {req.key} {receipt}"
            event = events.get(receipt["event_id"])
            assert event is not None, f"LOST {where}"
            lead_id, channel, _external_id, outcome = event
            assert lead_id == receipt["lead_id"], f"{where} is stored on lead {lead_id}"
            # A receipt first seen on a retry says "replayed": the event is stored either way.
            assert receipt["outcome"] in (outcome, "replayed"), f"{where} stored as {outcome}"
            assert channel == ("orders" if req.kind == "order" else "webform"), where
            assert receipt["lead_id"] in leads, f"LOST LEAD {where}"
            replayed = await req.stored(store)
            assert replayed is not None and replayed.record.id == receipt["event_id"], where
            assert outbox.get(receipt["event_id"]) == 1, f"{where}: outbox rows"

        # Exactly once, for everything stored (acknowledged or not).
        per_order: dict[str, int] = {}
        for _lead_id, channel, external_id, _outcome in events.values():
            if channel == "orders":
                per_order[external_id] = per_order.get(external_id, 0) + 1
        doubled = {k: c for k, c in per_order.items() if c > 1}
        assert not doubled, f"{context}: orders stored twice: {doubled}"
        created = [e[0] for e in events.values() if e[3] == "created"]
        assert len(created) == len(set(created)) == len(leads), f"{context}: leads vs creates"
        assert set(created) == leads, f"{context}: a lead without its creating event"
        # Every stored form is the one event its Idempotency-Key names: a form stored twice
        # would leave an event no key leads to.
        form_events = {eid for eid, e in events.items() if e[1] == "webform"}
        issued = [req for req, _ in ledger.acked.values()] + list(ledger.unacked.values())
        keyed = set()
        for req in issued:
            if req.kind == "form" and (found := await req.stored(store)) is not None:
                keyed.add(found.record.id)
        assert form_events == keyed, f"{context}: a form stored twice ({len(form_events)} events)"
        assert all(outbox.get(eid) == 1 for eid in events), f"{context}: outbox rows"
        assert all(e[0] in leads for e in events.values()), f"{context}: event on a missing lead"
    finally:
        await store.close()


async def check_api(
    session: aiohttp.ClientSession, url: str, ledger: Ledger, rng: random.Random, context: str
) -> None:
    sample = rng.sample(sorted(ledger.acked), min(20, len(ledger.acked)))
    for n in sample:
        req, receipt = ledger.acked[n]
        async with session.get(
            f"{url}/v1/leads/{receipt['lead_id']}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=_timeout(10),
        ) as resp:
            assert resp.status == 200, f"{context}: GET lead for {req.key}: {resp.status}"
            lead = await resp.json()
        assert receipt["event_id"] in {e["id"] for e in lead["events"]}, context


async def retry(
    session: aiohttp.ClientSession, url: str, ledger: Ledger, rng: random.Random, context: str
) -> int:
    """The sender's retry: everything unacknowledged, plus a sample of the acknowledged.
    Returns how many unacknowledged requests turned out to be stored already."""
    again = sorted(ledger.unacked)
    stored_unanswered = 0
    sample = rng.sample(sorted(ledger.acked), min(40, len(ledger.acked)))
    for n in again:
        req = ledger.unacked[n]
        status, doc = await _post(session, url, req)
        assert status in (200, 201) and doc is not None, f"{context}: retry {req.key}: {status}"
        assert (status == 200) == (doc["outcome"] == "replayed"), f"{context}: {doc}"
        del ledger.unacked[n]
        # A replay here is an event stored before the kill whose receipt never arrived.
        ledger.acked[n] = (req, doc)
        stored_unanswered += doc["outcome"] == "replayed"
    for n in sample:
        req, receipt = ledger.acked[n]
        status, doc = await _post(session, url, req)
        assert status == 200, f"{context}: acknowledged {req.key} posted again: {status} {doc}"
        assert doc == {**receipt, "outcome": "replayed"}, f"{context}: {doc} != {receipt}"
    return stored_unanswered


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=WORKERS * 2, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as s:
        yield s


async def test_sigkill_mid_traffic_loses_and_duplicates_nothing(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    seed = int(os.environ.get("KILL_TEST_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    server = Server(tmp_path)
    db_path = tmp_path / "leadgate.db"
    ledger = Ledger()
    counter = [0]
    # Per cycle: (seconds to the kill, acknowledged, unacknowledged, of those already stored)
    kills: list[list[float]] = []
    try:
        for cycle in range(CYCLES + 1):
            context = f"seed {seed}, cycle {cycle}"
            await server.start(session)
            if cycle:
                # Restarted on the database of a killed process: check, then retry.
                await check_store(db_path, ledger, context + " after restart")
                await check_api(session, server.url, ledger, rng, context)
                kills[-1].append(await retry(session, server.url, ledger, rng, context))
                await check_store(db_path, ledger, context + " after retries")
                assert not ledger.unacked
            if cycle == CYCLES:
                break
            stop = asyncio.Event()
            before = len(ledger.acked)
            workers = [
                asyncio.create_task(traffic(session, server.url, ledger, counter, stop))
                for _ in range(WORKERS)
            ]
            kill_after = rng.uniform(1.0, 2.0)
            await asyncio.sleep(kill_after)
            await server.kill()
            stop.set()
            await asyncio.gather(*workers)
            kills.append([round(kill_after, 2), len(ledger.acked) - before, len(ledger.unacked)])
            assert not ledger.bad, f"{context}: {ledger.bad[:5]}"
            # The kill must have landed in the middle of real traffic.
            assert len(ledger.acked) - before >= 20, f"{context}: too little traffic {kills}"

        # Every request ever issued is now exactly one stored event.
        stored = len(await read(db_path, all_events))
        assert stored == ledger.issued == len(ledger.acked), (seed, stored, ledger.issued, kills)
        assert await server.terminate() == 0
        print(f"kill test seed {seed}: (kill at s, acked, unacked, unacked but stored) {kills}")
    finally:
        await server.stop_quietly()


async def test_sigterm_answers_everything_it_stored(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """SIGTERM mid-traffic: the server stops taking requests, finishes the ones it has, and
    exits 0. Graceful means more than "nothing lost": no request may be stored without its
    receipt reaching the client, so, unlike after SIGKILL, nothing unacknowledged is stored.
    """
    server = Server(tmp_path)
    db_path = tmp_path / "leadgate.db"
    ledger = Ledger()
    counter = [0]
    try:
        await server.start(session)
        stop = asyncio.Event()
        workers = [
            asyncio.create_task(traffic(session, server.url, ledger, counter, stop))
            for _ in range(WORKERS)
        ]
        await asyncio.sleep(0.7)
        assert server.proc is not None
        acked_before = len(ledger.acked)
        server.proc.send_signal(signal.SIGTERM)
        # The clients keep posting until the server stops answering.
        code = await asyncio.wait_for(server.proc.wait(), 30)
        server.proc = None
        stop.set()
        await asyncio.gather(*workers)

        assert code == 0, server.log_tail()
        assert not ledger.bad, ledger.bad[:5]
        assert acked_before >= 20, "too little traffic to test anything"
        # The requests in flight at the signal were finished and answered.
        assert len(ledger.acked) > acked_before, "nothing in flight was answered after SIGTERM"
        await check_store(db_path, ledger, "after SIGTERM")
        store = SQLiteStore(db_path, role=StoreRole.CLIENT)
        await store.open()
        try:
            stored_unanswered = [
                req.key for req in ledger.unacked.values() if await req.stored(store) is not None
            ]
            events = len(await all_events(store))
        finally:
            await store.close()
        assert not stored_unanswered, f"stored but never answered: {stored_unanswered}"
        assert events == len(ledger.acked)
    finally:
        await server.stop_quietly()
