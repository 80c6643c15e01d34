"""Sentinel failover under load: the master dies, and no acknowledged event is lost.

A real `leadgate serve` runs on a Sentinel group (a master, a replica, three sentinels:
tests/redis_server.SentinelGroup) with `[store] min_replicas = 1`: a write is
acknowledged only once the replica has it too (WAIT), since replication is otherwise
asynchronous and what the master took but had not passed on dies with it. Sixteen
clients post forms (with an Idempotency-Key, so a sender can retry) and orders; the
master is SIGKILLed mid-load, the sentinels promote the replica, and the gateway follows
it; until the old master is back as a replica, the lone new master takes no write (503s,
never a 2xx it could lose). Every 2xx the clients got is an event in the promoted
store; everything else they got was an error (503 or a broken connection), never a
2xx for something lost, and posting it again stores it exactly once.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.config import load_settings
from gateway.web import make_store
from tests.redis_server import SentinelGroup, unique_prefix
from tests.replicas import Replica
from tests.store_view import all_events

pytestmark = pytest.mark.slow

ORDERS_TOKEN = "failover-test-orders-token"
ADMIN_TOKEN = "failover-test-admin-token"
WORKERS = 16


def write_config(directory: Path, group: SentinelGroup, prefix: str) -> Path:
    sentinels = ", ".join(f'"{a}"' for a in group.addresses)
    path = directory / "leadgate.toml"
    path.write_text(
        f"""
log_level = "WARNING"

[store]
kind = "redis"
sentinels = [{sentinels}]
master = "{group.name}"
prefix = "{prefix}"
min_replicas = 1
timeout_seconds = 1

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
""",
        encoding="utf-8",
    )
    return path


def request(n: int) -> tuple[str, dict[str, str], dict[str, Any], str]:
    """(path, headers, body, the event's external key) for the n-th request."""
    phone = f"+7903{n:07d}"
    if n % 2:
        body = {
            "order_id": f"F-{n}",
            "customer": {"name": f"Покупатель {n}", "phone": phone},
            "items": [{"sku": "SAW-1", "name": "Пила", "quantity": 1, "price": "1990.00"}],
            "total": "1990.00",
        }
        return "/v1/orders", {"Authorization": f"Bearer {ORDERS_TOKEN}"}, body, f"F-{n}"
    body = {"name": f"Клиент {n}", "phone": phone}
    return "/v1/forms/site", {"Idempotency-Key": f"fo-{n}"}, body, f"fo-{n}"


async def post(session: aiohttp.ClientSession, url: str, n: int) -> tuple[int, dict[str, Any]]:
    path, headers, body, _ = request(n)
    async with session.post(
        url + path, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=15)
    ) as resp:
        raw = await resp.read()
        doc = orjson.loads(raw) if raw else {}
        return resp.status, doc if isinstance(doc, dict) else {}


async def test_master_killed_under_load_loses_no_acknowledged_event(
    tmp_path: Path, redis_sentinel: SentinelGroup
) -> None:
    seed = int(os.environ.get("KILL_TEST_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    config = write_config(tmp_path, redis_sentinel, unique_prefix())
    gateway = Replica("gateway", config, tmp_path)
    acked: dict[int, dict[str, Any]] = {}
    refused: Counter[str] = Counter()
    unacked: set[int] = set()
    bad: list[str] = []
    counter = [0]
    stop = asyncio.Event()

    async def traffic(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            counter[0] += 1
            n = counter[0]
            try:
                status, doc = await post(session, gateway.url, n)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                refused[type(exc).__name__] += 1
                unacked.add(n)
                continue
            if status in (200, 201):
                acked[n] = doc
            elif status == 503:
                refused["503"] += 1
                unacked.add(n)
                await asyncio.sleep(0.05)  # what a sender's backoff does
            else:
                bad.append(f"{n}: {status} {doc}")

    store = None
    try:
        await gateway.start()
        await gateway.wait_ready()
        async with aiohttp.ClientSession() as session:
            workers = [asyncio.create_task(traffic(session)) for _ in range(WORKERS)]
            await asyncio.sleep(rng.uniform(1.0, 2.0))
            at_kill = len(acked)
            old = redis_sentinel.kill_master()
            new = await asyncio.to_thread(redis_sentinel.wait_for_promotion, old)
            promoted_at = len(acked)
            # The promoted master has no replica left, so with min_replicas = 1 it takes no
            # write (503s) until the old master is back: the sentinels make it a replica.
            await asyncio.to_thread(redis_sentinel.server_at(old).start)
            await asyncio.to_thread(redis_sentinel.wait_replicated, 30)
            await asyncio.sleep(2.0)  # traffic on the promoted master and its new replica
            stop.set()
            await asyncio.gather(*workers)
            context = (
                f"seed {seed}: {at_kill} acknowledged at the kill, {promoted_at} at the "
                f"promotion ({old} -> {new}), {len(acked)} at the end; refused {dict(refused)}"
            )
            assert not bad, f"{context}: {bad[:5]}"
            assert at_kill >= 50, f"{context}: the kill must land in real traffic"
            assert len(acked) > promoted_at, f"{context}: the gateway never followed the promotion"

            # The senders retry what was not acknowledged: each ends as one event.
            for n in sorted(unacked):
                for _ in range(50):  # a sender's retries, with backoff
                    status, doc = await post(session, gateway.url, n)
                    if status != 503:
                        break
                    await asyncio.sleep(0.2)
                assert status in (200, 201), (
                    f"{context}: retry of {n}: {status} {doc}\n{gateway.log_tail(6000)}"
                )
                acked[n] = doc

        store = make_store(load_settings(config))
        await store.open()
        events = {e.record.id: e for e in await all_events(store)}
        lost = [(n, doc) for n, doc in acked.items() if doc["event_id"] not in events]
        assert not lost, f"{context}: LOST {len(lost)} acknowledged events, e.g. {lost[:3]}"
        keys = Counter(e.record.external_id for e in events.values())
        assert all(c == 1 for c in keys.values()), f"{context}: an event stored twice"
        assert len(events) == counter[0], f"{context}: {len(events)} events, {counter[0]} requests"
        print(f"sentinel failover {context}")
    finally:
        if store is not None:
            await store.close()
        await gateway.kill()
        if bad or not acked:
            print(redis_sentinel.logs())
