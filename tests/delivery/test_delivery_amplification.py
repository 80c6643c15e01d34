"""Merge amplification: one person posting the public form again and again.

Every post from the same phone is merged into one lead. If each merge delivered the
lead with all its events, the CRM would receive O(n²) bytes (150 posts ≈ 20 MB, and a
5 MB request per merge after 12,000), and the outbox worker would read every event of
the lead for every row. Here 2,000 merges of one person, each with a new email, a new
name and a long comment: every delivery must stay small, the same size at the end as
at the start, and the worker must never load a lead's history.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from b24_standin import Bitrix24StandIn
from conftest import make_settings
from helpers import fast_delivery, standin, until

from gateway.keys import STORE
from gateway.models import MAX_PER_KIND
from gateway.web import create_app

__all__ = ["standin"]

Client = TestClient[Any, Any]
MERGES = 2000
PHONE = "+7 916 123-45-67"


class Sink:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        return web.json_response({"id": f"crm-{len(self.bodies)}"})


@pytest.fixture
async def sink() -> AsyncIterator[tuple[Sink, str]]:
    receiver = Sink()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/hook", receiver.handle)
    server = TestServer(app)
    await server.start_server()
    yield receiver, str(server.make_url("/hook"))
    await server.close()


def post(n: int) -> dict[str, str]:
    return {
        "name": f"Посетитель {n}",
        "phone": PHONE,
        "email": f"visitor{n}@example.ru",
        "comment": f"Заявка номер {n}. " + "Перезвоните, пожалуйста. " * 60,
        "utm_source": "ads",
    }


def spy_on_history_loads(client: Client) -> list[str]:
    """Every get_lead (a lead with all its events) the app makes from now on."""
    store = client.app[STORE]
    calls: list[str] = []
    original = store.get_lead

    async def get_lead(lead_id: str) -> Any:
        calls.append(lead_id)
        return await original(lead_id)

    store.get_lead = get_lead  # type: ignore[method-assign]
    return calls


async def test_2000_merges_each_deliver_a_small_bounded_payload(
    aiohttp_client: Callable[..., Any], tmp_path: Path, sink: tuple[Sink, str]
) -> None:
    receiver, url = sink
    delivery = fast_delivery()
    delivery.update(sink="webhook", webhook={"url": url, "secret": "amplification-secret-1"})
    settings = make_settings(
        tmp_path, delivery=delivery, ratelimit={"requests": 100_000, "per_seconds": 60}
    )
    client: Client = await aiohttp_client(create_app(settings))
    history_loads = spy_on_history_loads(client)
    lead_id = None
    for n in range(MERGES + 1):
        resp = await client.post("/v1/forms/site", json=post(n))
        assert resp.status == 201
        receipt = await resp.json()
        lead_id = lead_id or receipt["lead_id"]
        assert receipt["lead_id"] == lead_id  # one person, one lead

    await until(lambda: len(receiver.bodies) >= MERGES + 1, within=120)
    sizes = [len(b) for b in receiver.bodies]
    first_merge = orjson.loads(receiver.bodies[1])
    newest = [f"visitor{MERGES}@example.ru"]
    last = next(
        p
        for p in (orjson.loads(b) for b in receiver.bodies)
        if p["event"]["contact"]["emails"] == newest
    )
    assert first_merge["kind"] == "lead.merged"
    # Small, and as small after 2,000 merges as after one (the post itself is ~2 KB).
    assert max(sizes) < 12_000, max(sizes)
    assert max(sizes[-100:]) <= max(sizes[1:101]) + 200
    assert sum(sizes) < (MERGES + 1) * 12_000  # linear, not quadratic
    # The summary: counts and times instead of the history.
    lead = last["lead"]
    assert "events" not in lead
    assert lead["event_count"] == MERGES + 1
    assert lead["created_at"] <= lead["last_event_at"]
    assert lead["contact"]["phones"] == ["+79161234567"]
    assert len(lead["contact"]["emails"]) == MAX_PER_KIND  # the first ones, not 2,001
    assert lead["contact"]["emails"][0] == "visitor0@example.ru"
    # And the worker never read the lead's history to deliver it.
    assert history_loads == []
    full = await client.app[STORE].get_lead(lead_id)
    assert full is not None and len(full.events) == MERGES + 1


async def test_bitrix24_merge_comments_stay_small(
    aiohttp_client: Callable[..., Any], tmp_path: Path, standin: Bitrix24StandIn
) -> None:
    settings = make_settings(
        tmp_path,
        delivery=fast_delivery(standin.webhook_url),
        ratelimit={"requests": 100_000, "per_seconds": 60},
    )
    client: Client = await aiohttp_client(create_app(settings))
    history_loads = spy_on_history_loads(client)
    merges = 300
    for n in range(merges + 1):
        assert (await client.post("/v1/forms/site", json=post(n))).status == 201
    await until(lambda: len(standin.comments) >= merges, within=120)
    comments = [str(c["COMMENT"]) for c in standin.comments.values()]
    assert max(len(c) for c in comments) < 4_000
    assert history_loads == []
    (crm_id,) = {int(c["ENTITY_ID"]) for c in standin.comments.values()}
    lead = standin.leads[crm_id]
    assert len(lead.get("EMAIL", [])) == MAX_PER_KIND  # filled in, but never all 301 addresses
