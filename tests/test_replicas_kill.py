"""Two replicas on one Redis, one SIGKILLed mid-load: nothing lost, nothing doubled.

Two real `leadgate serve` processes share a Redis store (a redis-server of the tests' own,
AOF always) behind a round-robin TCP proxy, and deliver to one Bitrix24 stand-in whose
leaky bucket is small, so both replicas together must pace themselves. Many clients post
orders, forms (with an Idempotency-Key) and CTI telephony notifications (newCall, then
hangup: the two halves of one call often land on different replicas) for a pool of people
who write again and again, so the same person arrives on both replicas at once. At a
random moment one replica is killed with SIGKILL; the clients retry what was not
acknowledged (through the proxy, now to the survivor), and:

- every acknowledged event is stored exactly once, on the lead its receipt named;
- every person has exactly one lead (no lead was created twice for one person);
- the CRM stand-in got every lead exactly once (by ORIGIN_ID) and never answered
  QUERY_LIMIT_EXCEEDED, although the dead replica's outbox claims had to be taken over;
- round robin stayed even: the sellers' counts differ by at most one.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.config import load_settings
from gateway.store.base import Store
from gateway.web import make_store
from tests.delivery.b24_standin import Bitrix24StandIn
from tests.redis_server import RedisTarget
from tests.replicas import Replica, RoundRobinProxy
from tests.store_view import all_events, all_leads, all_outbox

pytestmark = pytest.mark.slow

ORDERS_TOKEN = "replica-test-orders-token"
ADMIN_TOKEN = "replica-test-admin-token-0001"
CTI_TOKEN = "replica-test-cti-token-0001"
WORKERS = 24
PEOPLE = 150
SELLERS = ("anna", "boris", "vera")
LEASE = 3.0  # seconds a dead replica's outbox claims stay its own


def write_config(directory: Path, target: RedisTarget, webhook_url: str) -> Path:
    sellers = "\n".join(
        f'[[sellers]]\nid = "{s}"\nname = "{s.title()}"\ncrm_user_id = {i + 1}\n'
        for i, s in enumerate(SELLERS)
    )
    path = directory / "leadgate.toml"
    path.write_text(
        f"""
log_level = "WARNING"

[store]
kind = "redis"
url = "{target.url}"
prefix = "{target.prefix}"

[orders.tokens]
shop = "{ORDERS_TOKEN}"

[admin.tokens]
ops = "{ADMIN_TOKEN}"

[telephony.cti]
token = "{CTI_TOKEN}"

[ratelimit]
requests = 1000000
per_seconds = 1

[delivery]
sink = "bitrix24"
poll_seconds = 0.05
backoff_initial_seconds = 0.05
backoff_max_seconds = 0.5
wait_seconds = 0.05
claim_lease_seconds = {LEASE}

[delivery.bitrix24]
webhook_url = "{webhook_url}"
burst = 10
rate = 10.0
assume_busy_on_start = false
timeout_seconds = 1.0

{sellers}
""",
        encoding="utf-8",
    )
    return path


# --- the traffic ------------------------------------------------------------------------------


def phone_of(person: int) -> str:
    return f"+7926{person:07d}"


@dataclass(frozen=True)
class Request:
    n: int
    kind: str  # "order" | "form" | "call"
    person: int

    def posts(self) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
        """(path, headers, body) — a call is two notifications, newCall then hangup; the
        receipt that counts is the hangup's, which records the missed call."""
        phone = phone_of(self.person)
        if self.kind == "order":
            body = {
                "order_id": f"R-{self.n}",
                "customer": {"name": f"Покупатель {self.person}", "phone": phone},
                "items": [{"sku": "SAW-1", "name": "Пила", "quantity": 1, "price": "1990.00"}],
                "total": "1990.00",
            }
            return [("/v1/orders", {"Authorization": f"Bearer {ORDERS_TOKEN}"}, body)]
        if self.kind == "form":
            body = {"name": f"Клиент {self.person}", "phone": phone, "comment": f"заявка {self.n}"}
            return [("/v1/forms/site", {"Idempotency-Key": f"form-{self.n}"}, body)]
        common = {"from": phone.lstrip("+"), "to": "74951234567", "direction": "in"}
        call_id = f"call-{self.n}"
        auth = {"Authorization": f"Bearer {CTI_TOKEN}"}
        return [
            ("/v1/telephony/cti", auth, {**common, "event": "newCall", "callId": call_id}),
            ("/v1/telephony/cti", auth, {**common, "event": "hangup", "callId": call_id,
                                          "cause": "busy"}),
        ]  # fmt: skip


def make_request(n: int, rng: random.Random) -> Request:
    kind = ("order", "form", "call")[n % 3]
    return Request(n, kind, rng.randrange(PEOPLE))


@dataclass
class Ledger:
    acked: dict[int, tuple[Request, dict[str, Any]]] = field(default_factory=dict)
    unacked: dict[int, Request] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)
    issued: int = 0


async def send(session: aiohttp.ClientSession, url: str, req: Request) -> dict[str, Any] | None:
    """Post the request's notifications; the last receipt, or None when one was refused
    with 503 or the connection failed (not acknowledged: the sender retries it whole)."""
    receipt: dict[str, Any] | None = None
    for path, headers, body in req.posts():
        kwargs: dict[str, Any] = {"headers": headers, "timeout": aiohttp.ClientTimeout(total=10)}
        if req.kind == "call":
            kwargs["data"] = body  # CTI posts application/x-www-form-urlencoded
        else:
            kwargs["json"] = body
        async with session.post(url + path, **kwargs) as resp:
            raw = await resp.read()
            if resp.status == 503:
                return None
            doc = orjson.loads(raw) if raw else None
            if resp.status not in (200, 201) or not isinstance(doc, dict):
                raise AssertionError(f"{req.kind} {req.n} {path}: {resp.status} {raw[:300]!r}")
            receipt = doc
    if req.kind == "call":
        # The PBX protocol has no receipt (the answer steers the call): the call is known
        # by its id, checked in the store afterwards.
        return {"call_id": f"call-{req.n}"}
    return receipt


async def traffic(
    session: aiohttp.ClientSession,
    url: str,
    ledger: Ledger,
    counter: list[int],
    rng: random.Random,
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        counter[0] += 1
        req = make_request(counter[0], rng)
        ledger.issued += 1
        ledger.unacked[req.n] = req
        try:
            receipt = await send(session, url, req)
        except (TimeoutError, aiohttp.ClientError, OSError):
            continue
        except AssertionError as exc:
            ledger.bad.append(str(exc))
            continue
        if receipt is not None:
            del ledger.unacked[req.n]
            ledger.acked[req.n] = (req, receipt)


async def until(check: Any, within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


# --- the test ---------------------------------------------------------------------------------


@pytest.fixture
async def standin() -> AsyncIterator[Bitrix24StandIn]:
    server = Bitrix24StandIn(burst=10, rate=10.0)
    await server.start()
    yield server
    await server.stop()


async def test_sigkill_one_replica_mid_load(
    tmp_path: Path, redis_target: RedisTarget, standin: Bitrix24StandIn
) -> None:
    seed = int(os.environ.get("KILL_TEST_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    config = write_config(tmp_path, redis_target, standin.webhook_url)
    replicas = [Replica(name, config, tmp_path) for name in ("a", "b")]
    proxy = RoundRobinProxy([r.port for r in replicas])
    await proxy.start()
    ledger, counter = Ledger(), [0]
    store: Store | None = None
    try:
        for replica in replicas:
            await replica.start()
        for replica in replicas:
            await replica.wait_ready()
        victim, survivor = rng.sample(replicas, 2)
        connector = aiohttp.TCPConnector(limit=WORKERS * 2)
        async with aiohttp.ClientSession(connector=connector) as session:
            stop = asyncio.Event()
            workers = [
                asyncio.create_task(traffic(session, proxy.url, ledger, counter, rng, stop))
                for _ in range(WORKERS)
            ]
            kill_after = rng.uniform(1.5, 3.0)
            await asyncio.sleep(kill_after)
            acked_at_kill = len(ledger.acked)
            await victim.kill()
            await asyncio.sleep(1.0)  # the survivor carries the load alone for a while
            stop.set()
            await asyncio.gather(*workers)
            context = (
                f"seed {seed}: killed {victim.name} after {kill_after:.2f}s with "
                f"{acked_at_kill} acknowledged; connections {proxy.connections}"
            )
            assert not ledger.bad, f"{context}: {ledger.bad[:5]}"
            assert acked_at_kill >= 50, f"{context}: the kill must land in real traffic"
            assert min(proxy.connections.values()) > 0 and len(proxy.connections) == 2, context

            # The senders retry what was not acknowledged, now through to the survivor.
            for n in sorted(ledger.unacked):
                req = ledger.unacked.pop(n)
                receipt = await send(session, proxy.url, req)
                assert receipt is not None, f"{context}: retry of {req} refused"
                ledger.acked[n] = (req, receipt)

        settings = load_settings(config)
        store = make_store(settings)
        await store.open()
        events = {e.record.id: e for e in await all_events(store)}
        leads = await all_leads(store)

        # Every acknowledged event exactly once, on the lead its receipt named.
        by_external = Counter((e.record.channel, e.record.external_id) for e in events.values())
        doubled_events = {k: c for k, c in by_external.items() if c > 1}
        assert not doubled_events, f"{context}: stored twice: {doubled_events}"
        lead_of_call = {e.record.external_id: e.lead_id for e in events.values()}
        for _n, (req, receipt) in sorted(ledger.acked.items()):
            if req.kind == "call":
                start, end = f"cti:{receipt['call_id']}", f"cti:{receipt['call_id']}:end"
                assert start in lead_of_call and end in lead_of_call, f"{context}: LOST {req}"
                assert lead_of_call[start] == lead_of_call[end], f"{context}: {req} split"
                continue
            stored = events.get(receipt["event_id"])
            assert stored is not None, f"{context}: LOST {req} {receipt}"
            assert stored.lead_id == receipt["lead_id"], f"{context}: {req} moved lead"

        # One lead per person.
        per_phone = Counter(phone for lead in leads for phone in lead.contact.phones)
        doubled = {p: c for p, c in per_phone.items() if c > 1}
        assert not doubled, f"{context}: people with two leads: {doubled}"

        # Round robin stayed even across the replicas (and the kill).
        counts = Counter(lead.assigned_to for lead in leads)
        assert set(counts) <= set(SELLERS), counts
        assert max(counts.values()) - min(counts.values()) <= 1, f"{context}: {counts}"

        # The CRM got every lead once, the dead replica's claims taken over after the lease.
        async def all_delivered() -> bool:
            assert store is not None
            items = await all_outbox(store)
            return all(i.state.value in ("delivered", "dead") for i in items)

        await until(all_delivered, 60 + LEASE, f"the outbox to drain ({context})")
        dead = [i for i in await all_outbox(store) if i.state.value == "dead"]
        assert not dead, f"{context}: dead letters {dead[:3]}"
        by_origin = standin.by_origin()
        assert {lead.id for lead in leads} <= set(by_origin), f"{context}: a lead not in CRM"
        twice = {o: ids for o, ids in by_origin.items() if len(ids) > 1}
        assert not twice, f"{context}: leads created twice in the CRM: {twice}"
        assert standin.count(503) == 0, f"{context}: QUERY_LIMIT_EXCEEDED {standin.count(503)}"
        print(
            f"replica kill {context}: {len(ledger.acked)} requests, {len(events)} events, "
            f"{len(leads)} leads, {len(standin.log)} CRM requests, counts {dict(counts)}"
        )
        assert await survivor.terminate() == 0
    finally:
        if store is not None:
            await store.close()
        for replica in replicas:
            await replica.kill()
        await proxy.stop()
