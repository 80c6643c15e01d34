"""kill -9 mid-delivery: every lead exactly once in the CRM, every merged event one comment.

`leadgate serve` runs as a real subprocess with the bitrix24 sink pointed at the stand-in,
which runs here, in the test process. The stand-in holds its answer after doing the work,
so the kill lands in the worst window: the CRM has the lead (or the comment), leadgate
never heard back. Then a third kill at a random moment while a backlog drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from b24_standin import Bitrix24StandIn
from helpers import ORDER_AUTH, ORDERS_TOKEN, order, phone, standin, until
from store_view import all_events, all_leads, outbox_of, read

from gateway.models import Outcome
from gateway.store.base import OutboxState

__all__ = ["standin"]

pytestmark = pytest.mark.slow

PERSONS = 24


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, webhook_url: str) -> Path:
    config = tmp_path / "leadgate.toml"
    config.write_text(
        f"""
[store]
path = "{tmp_path / "leadgate.db"}"

[orders.tokens]
site = "{ORDERS_TOKEN}"

[ratelimit]
requests = 10000

[[sellers]]
id = "anna"
name = "Анна"
crm_user_id = 1

[delivery]
sink = "bitrix24"
poll_seconds = 0.05
backoff_initial_seconds = 0.05
backoff_max_seconds = 0.2
wait_seconds = 0.05

[delivery.bitrix24]
webhook_url = "{webhook_url}"
assume_busy_on_start = false
""",
        encoding="utf-8",
    )
    return config


class Gateway:
    def __init__(self, tmp_path: Path, config: Path) -> None:
        self.tmp_path, self.config = tmp_path, config
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self) -> None:
        self.starts += 1
        command = [sys.executable, "-m", "gateway.cli", "serve", "-c", str(self.config)]
        with open(self.tmp_path / f"serve-{self.starts}.log", "wb") as log:
            self.proc = subprocess.Popen(
                [*command, "--port", str(self.port)],
                cwd=self.tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def start(self) -> None:
        self._spawn()

        async def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(self.logs())
            with contextlib.suppress(aiohttp.ClientError):
                async with aiohttp.ClientSession() as s, s.get(f"{self.url}/healthz") as r:
                    return r.status == 200
            return False

        await until(up, within=20, step=0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp_path.glob("*.log")))


@contextlib.contextmanager
def running(gw: Gateway) -> Iterator[Gateway]:
    try:
        yield gw
    finally:
        gw.stop()


async def post_orders(gw: Gateway, numbers: list[int], persons: list[int]) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as s:

        async def one(n: int, person: int) -> dict[str, Any]:
            body = order(n, phone(person), name=f"Клиент {person}")
            async with s.post(f"{gw.url}/v1/orders", json=body, headers=ORDER_AUTH) as r:
                assert r.status == 201, await r.text()
                receipt: dict[str, Any] = await r.json()
                return receipt

        return list(
            await asyncio.gather(*(one(n, p) for n, p in zip(numbers, persons, strict=True)))
        )


async def outbox_done(db: Path) -> bool:
    return all(item.state is OutboxState.DELIVERED for item in await outbox_of(db))


async def test_kill_mid_delivery_loses_and_duplicates_nothing(
    tmp_path: Path, standin: Bitrix24StandIn
) -> None:
    db = tmp_path / "leadgate.db"
    gw = Gateway(tmp_path, write_config(tmp_path, standin.webhook_url))
    with running(gw):
        # 1. The CRM creates the first batch of leads; the answer never comes back.
        held = standin.hold("crm.lead.add")
        await gw.start()
        await post_orders(gw, list(range(PERSONS)), list(range(PERSONS)))
        await asyncio.wait_for(held.reached.wait(), 15)
        gw.kill()
        held.release()
        landed = len(standin.leads)
        assert landed >= 1

        # 2. After a restart the first comments land and the answer is lost again.
        held = standin.hold("crm.timeline.comment.add")
        await gw.start()
        merges = [p for p in range(PERSONS) for _ in range(2)]
        await post_orders(gw, list(range(100, 100 + len(merges))), merges)
        await asyncio.wait_for(held.reached.wait(), 15)
        gw.kill()
        held.release()
        assert standin.comments

        # 3. A backlog of new people and more merges, killed at a random moment.
        standin.latency = 0.05  # a slower CRM widens the window
        await gw.start()
        fresh = list(range(PERSONS, PERSONS + 30))
        await post_orders(gw, list(range(200, 230)), fresh)
        await post_orders(gw, list(range(300, 310)), list(range(10)))
        await asyncio.sleep(random.uniform(0.0, 0.4))
        gw.kill()
        standin.latency = 0.0

        # 4. Restart and let everything drain.
        await gw.start()
        await until(lambda: outbox_done(db), within=30)

    leads = [lead.id for lead in await read(db, all_leads)]
    assert len(leads) == PERSONS + 30
    crm = standin.by_origin()
    assert sorted(crm) == sorted(leads), gw.logs()
    duplicated = {lid: ids for lid, ids in crm.items() if len(ids) != 1}
    assert not duplicated, f"leads created twice: {duplicated}"
    assert len(standin.leads) == len(leads)

    merged = [
        (e.record.id, e.lead_id)
        for e in await read(db, all_events)
        if e.record.outcome is Outcome.MERGED
    ]
    assert len(merged) == 2 * PERSONS + 10
    for event_id, lead_id in merged:
        (crm_id,) = crm[lead_id]
        on_lead = [c for c in standin.comments_on(crm_id) if f"leadgate:{event_id}" in c]
        assert len(on_lead) == 1, f"event {event_id}: {len(on_lead)} comments"
    assert len(standin.comments) == len(merged)
    assert standin.count(503) == 0
