"""The lead-form catch-up (leadForms.getLeads) against the stand-in: leads no event
brought become the same events a callback would have made, once, whatever the page order."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from vk_standin import VkStandIn
from vk_support import (
    GROUP,
    TOKEN,
    USER_TOKEN,
    Client,
    MakeClient,
    community,
    connector,
    event,
    eventually,
    lead,
    load,
    make_client,
    metric,
    send,
    standin,
    vk_events,
)

from connectors.vk.catchup import LeadFormCatchUp, checkpoint_key
from gateway.keys import STORE

__all__ = ["make_client", "standin"]

AT = datetime(2025, 11, 24, 13, 5, tzinfo=UTC)  # a few minutes after the fixtures' leads


def seed(vk: VkStandIn) -> list[dict[str, Any]]:
    vk.forms[GROUP] = load("leadForms.list.schema-built.json")["response"]
    leads: list[dict[str, Any]] = load("leadForms.getLeads.schema-built.json")["response"]["leads"]
    vk.leads[(GROUP, 1)] = copy.deepcopy(leads)
    return vk.leads[(GROUP, 1)]


async def catch_up_client(
    make_client: MakeClient, standin: VkStandIn, **overrides: Any
) -> tuple[Client, LeadFormCatchUp, list[dict[str, Any]]]:
    """An app whose own first catch-up run (at start, with no forms in VK yet) is over;
    then VK gets its forms and leads, and the test runs the catch-up itself (the next
    supervised run is catch_up_minutes away)."""
    client = await make_client(community(catch_up_token=USER_TOKEN, **overrides))
    labels = {"community": str(GROUP)}

    async def first_run_over() -> bool:
        return metric(client, "leadgate_vk_last_catch_up_timestamp_seconds", **labels) > 0

    await eventually(first_run_over)
    vk = connector(client)
    vk.clock = lambda: AT
    (task,) = vk.catch_ups
    return client, task, seed(standin)


async def checkpoint(client: Client, form_id: int = 1) -> str | None:
    value: str | None = await client.app[STORE].get_checkpoint(checkpoint_key(GROUP, form_id))
    return value


async def test_catch_up_takes_what_no_event_brought_and_nothing_twice(
    make_client: MakeClient, standin: VkStandIn
) -> None:
    client, task, _ = await catch_up_client(make_client, standin)
    # Lead 39842910 came as an event; 39842912 and 39842913 did not.
    assert await send(client, event("lead_forms_new.comfort-test.json")) == (200, "ok")
    assert await task.run_once() == 2
    events = await vk_events(client)
    assert [e.record.external_id for e in events] == [
        "11111111:lead:39842910",
        "11111111:lead:39842913",
        "11111111:lead:39842912",
    ]
    maria = events[1]
    assert maria.record.meta["via"] == "catch_up"
    assert maria.record.text is not None
    assert "Ваш заказ в виде «ссылка или артикул — количество»: 29128569 — 2" in maria.record.text
    assert (await lead(client, maria.lead_id)).contact.name == "Мария"
    # Same person (handle and phone) as the event's lead: joins it, named by users.get.
    assert events[2].lead_id == events[0].lead_id
    assert await checkpoint(client) == "39842913"
    assert metric(client, "leadgate_vk_catch_up_leads_total", community=str(GROUP)) == 2
    assert (
        metric(client, "leadgate_vk_last_catch_up_timestamp_seconds", community=str(GROUP))
        == AT.timestamp()
    )
    # The community token is not used for leadForms.*, the user token is.
    assert all(p["group_id"] == str(GROUP) for p in standin.called("leadForms.getLeads"))

    assert await task.run_once() == 0
    assert len(await vk_events(client)) == 3
    new = dict(
        load("leadForms.getLeads.schema-built.json")["response"]["leads"][1],
        lead_id=39842920,
        date=int((AT - timedelta(minutes=1)).timestamp()),
    )
    standin.leads[(GROUP, 1)].append(new)
    assert await task.run_once() == 1
    assert await checkpoint(client) == "39842920"


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_catch_up_does_not_depend_on_the_page_order(
    make_client: MakeClient, standin: VkStandIn, order: str
) -> None:
    client, task, leads = await catch_up_client(make_client, standin)
    standin.lead_order = order
    base = leads[1]
    for n in range(7):
        leads.append(dict(base, lead_id=39842930 + n, answers=base["answers"]))
    task.page_size = 2
    await client.app[STORE].save_checkpoint(checkpoint_key(GROUP, 1), "39842912")
    assert await task.run_once() == 1 + 7  # 39842913 and the seven new ones
    assert await checkpoint(client) == "39842936"
    pages = len(standin.called("leadForms.getLeads"))
    assert pages == 5  # ten leads, two a page: every page, whatever the order
    standin.calls.clear()
    assert await task.run_once() == 0
    # Newest first, the first page already reaches the checkpoint: no need to read on.
    assert len(standin.called("leadForms.getLeads")) == (1 if order == "desc" else 5)


async def test_the_first_run_takes_recent_leads_only(
    make_client: MakeClient, standin: VkStandIn
) -> None:
    client, task, leads = await catch_up_client(make_client, standin, first_sync_days=3)
    old = int((AT - timedelta(days=30)).timestamp())
    leads.append(dict(leads[1], lead_id=39842999, date=old))
    assert await task.run_once() == 3
    ids = {e.record.external_id for e in await vk_events(client)}
    assert "11111111:lead:39842999" not in ids
    assert await checkpoint(client) == "39842999"  # seen, and never taken later


async def test_only_the_named_forms_are_caught_up(
    make_client: MakeClient, standin: VkStandIn
) -> None:
    _client, task, _ = await catch_up_client(make_client, standin, lead_form_ids=[7])
    assert await task.run_once() == 0
    assert standin.called("leadForms.getLeads") == []


async def test_a_community_token_for_the_catch_up_shows_on_readyz(
    make_client: MakeClient, standin: VkStandIn
) -> None:
    seed(standin)
    client = await make_client(community(catch_up_token=TOKEN, catch_up_minutes=0.01))
    # VK refuses leadForms.* with a community token (error 27): the task keeps running,
    # /readyz says why nothing is caught up.
    for _ in range(200):
        body = await (await client.get("/readyz")).json()
        if body["problems"]:
            break
        await asyncio.sleep(0.05)
    assert body["status"] == "degraded"
    (problem,) = body["problems"]
    assert problem.startswith("vk: lead-form catch-up: VK leadForms.list error 27:")
    assert "Group authorization failed" in problem
    assert TOKEN not in problem


async def test_the_supervised_task_catches_up_on_its_own(
    make_client: MakeClient, standin: VkStandIn
) -> None:
    recent = int(datetime.now(UTC).timestamp()) - 3600
    for item in seed(standin):
        item["date"] = recent  # the task runs on the real clock
    client = await make_client(community(catch_up_token=USER_TOKEN))
    for _ in range(200):
        if len(await vk_events(client)) == 3:
            break
        await asyncio.sleep(0.05)
    assert len(await vk_events(client)) == 3
    body = await (await client.get("/readyz")).json()
    assert body["status"] == "ok", body
