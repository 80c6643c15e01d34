"""A real `leadgate serve` killed (SIGKILL) after it answered Meta 200 but before it handled
the body: nothing is lost and nothing doubles. The body waits in the inbox; the restarted
process handles it once its dead predecessor's claim runs out, Meta's retry of the same body
meanwhile is a duplicate, and the Lead Ads lead in it is fetched after the restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from meta_standin import MetaGraphStandIn
from meta_support import (
    APP_SECRET,
    LEAD_PAGE_ID,
    LEAD_PAGE_TOKEN,
    PAGE_ID,
    PAGE_TOKEN,
    PSID,
    VERIFY_TOKEN,
    as_meta_sends,
    fixture,
    sample_lead,
    sign,
    text_item,
)
from served import Served
from store_view import all_events, all_leads, read

pytestmark = pytest.mark.slow


def config(db: Path, graph: str) -> str:
    return f"""
log_level = "WARNING"
[store]
path = "{db}"
[inbox]
claim_lease_seconds = 5
poll_seconds = 0.2
backoff_initial_seconds = 0.1
backoff_max_seconds = 0.5
[meta]
app_secret = "{APP_SECRET}"
verify_token = "{VERIFY_TOKEN}"
graph_base = "{graph}"
graph_timeout_seconds = 60
[[meta.pages]]
id = "{PAGE_ID}"
token = "{PAGE_TOKEN}"
[[meta.pages]]
id = "{LEAD_PAGE_ID}"
token = "{LEAD_PAGE_TOKEN}"
"""


async def deliver(session: aiohttp.ClientSession, base: str, body: bytes) -> int:
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body)}
    async with session.post(f"{base}/v1/meta", data=body, headers=headers) as resp:
        return resp.status


async def test_sigkill_between_the_200_and_the_handling_loses_nothing(tmp_path: Path) -> None:
    graph = MetaGraphStandIn()
    await graph.start()
    graph.account(PAGE_ID, PAGE_TOKEN)
    graph.account(LEAD_PAGE_ID, LEAD_PAGE_TOKEN)
    graph.person(PSID, {"first_name": "Иван", "last_name": "Петров"})
    sample_lead(graph, "123123123123")
    graph.hold = asyncio.Event()
    db = tmp_path / "leadgate.db"
    leadgen = fixture("leadgen_webhook_two_changes.meta-docs.json")["entry"][0]
    leadgen["changes"] = leadgen["changes"][:1]
    message = {"id": PAGE_ID, "time": 1772445600000, "messaging": [text_item("m_kill", "Привет")]}
    body = as_meta_sends({"object": "page", "entry": [message, leadgen]})
    first = Served(tmp_path, config(db, graph.url))
    second: Served | None = None
    try:
        async with aiohttp.ClientSession() as session:
            await asyncio.to_thread(first.__enter__)
            assert await deliver(session, first.base, body) == 200
            # The handler is inside the name lookup, after the 200: kill it right there.
            await asyncio.wait_for(graph.held.wait(), 30)
            assert first.proc is not None
            first.proc.kill()
            await asyncio.to_thread(first.proc.wait)
            assert await read(db, all_events) == []  # nothing handled yet: only the inbox
            graph.hold.set()

            second = Served(tmp_path, config(db, graph.url))
            await asyncio.to_thread(second.__enter__)
            assert await deliver(session, second.base, body) == 200  # Meta's retry

            async def settled() -> bool:
                stats = await read(db, lambda store: store.inbox_stats())
                pending = sum(s.pending for s in stats.values())
                return pending == 0 and len(await read(db, all_events)) >= 2

            deadline = asyncio.get_running_loop().time() + 60
            while not await settled():
                assert asyncio.get_running_loop().time() < deadline, second.stderr()
                await asyncio.sleep(0.1)
        events = await read(db, all_events)
        assert sorted(e.record.external_id for e in events) == [
            "leadgen:123123123123",
            "m_kill",
        ]
        leads = await read(db, all_leads)
        assert len(leads) == 2
        assert {lead.contact.name for lead in leads} == {"Иван Петров", "Joe Example"}
        assert graph.count("GET", "123123123123") == 1
        assert "Traceback" not in second.stderr(), second.stderr()
    finally:
        for served in (first, second):
            if served is not None and served.proc is not None and served.proc.poll() is None:
                served.__exit__(None, None, None)
        await graph.stop()
