"""Lead Ads over HTTP against the Graph API stand-in: each leadgen id an inbox entry of its
own, its answers fetched with retries until they come, a lead that never comes dead with
its id, a refused token on /readyz."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from meta_standin import MetaGraphStandIn
from meta_support import (
    LEAD_PAGE_ID,
    LEAD_PAGE_TOKEN,
    MakeClient,
    as_meta_sends,
    drained,
    eventually,
    fixture,
    fixture_bytes,
    graph,  # noqa: F401  (a fixture)
    leads,
    make_client,  # noqa: F401  (a fixture)
    metric,
    post,
    sample_lead,
)
from store_view import all_events

from gateway.inbox import InboxState
from gateway.keys import STORE

SAMPLE = "leadgen_webhook_two_changes.meta-docs.json"


async def test_leadgen_answers_are_fetched_and_mapped(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    sample_lead(graph, "123123123123", phone_number="+7 (916) 111-22-33")
    sample_lead(graph, "123123123124", company_name="ООО Ромашка")
    client = await make_client()
    raw = fixture_bytes(SAMPLE)
    assert (await post(client, raw)).status == 200
    await drained(client)
    found = sorted(await leads(client), key=lambda lead: lead.contact.company or "")
    assert [lead.contact.company for lead in found] == [None, "ООО Ромашка"]
    assert found[0].contact.phones == ("+79161112233",)
    assert all(lead.contact.name == "Joe Example" for lead in found)
    events = await all_events(client.app[STORE])
    assert sorted(e.record.external_id for e in events) == [
        "leadgen:123123123123",
        "leadgen:123123123124",
    ]
    assert {e.record.source_detail for e in events} == {"form 12312312312, ad 12312312312"}
    text = events[0].record.text or ""
    assert "Car make: Honda" in text and "Selected dealer: 99213450" in text
    # The lead's time is the Graph's created_time, not when we fetched it.
    assert events[0].record.occurred_at == datetime(2015, 2, 28, 8, 49, 14, tzinfo=UTC)
    page = LEAD_PAGE_ID
    assert metric(client, "leadgate_meta_leadgen_total", page=page, result="accepted") == 2
    # Each leadgen id is one inbox entry of its own, done.
    entries = await client.app[STORE].list_inbox(InboxState.DONE, 10)
    assert sorted((e.channel, e.key) for e in entries if e.channel == "meta.leadgen") == [
        ("meta.leadgen", "123123123123"),
        ("meta.leadgen", "123123123124"),
    ]


async def test_a_leadgen_id_seen_again_is_not_fetched_again(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    sample_lead(graph, "123123123123")
    sample_lead(graph, "123123123124")
    client = await make_client()
    assert (await post(client, fixture_bytes(SAMPLE))).status == 200
    await drained(client)
    # Meta's retry may come in another batch (other bytes): the leadgen ids are what count.
    again = fixture(SAMPLE)
    again["entry"][0]["time"] += 1
    assert (await post(client, as_meta_sends(again))).status == 200
    await drained(client)
    assert graph.count("GET", "1231231231") == 2
    assert len(await leads(client)) == 2


async def test_a_lead_not_readable_yet_is_fetched_until_it_comes(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    sample_lead(graph, "123123123123")
    sample_lead(graph, "123123123124")
    graph.lead_appears_after("123123123124", reads=3)
    graph.fail("page_rate", path="^123123123123$")
    graph.fail("unexpected", path="^123123123123$", raw=b"<html>502 Bad Gateway</html>")
    client = await make_client()
    assert (await post(client, fixture_bytes(SAMPLE))).status == 200  # stored: answered at once
    await drained(client)
    assert len(await leads(client)) == 2
    assert graph.count("GET", "123123123124") == 4
    labels = {"account": LEAD_PAGE_ID, "call": "lead"}
    assert metric(client, "leadgate_meta_graph_errors_total", code="32", **labels) == 1
    assert metric(client, "leadgate_meta_graph_errors_total", code="http_500", **labels) == 1
    assert metric(client, "leadgate_meta_graph_errors_total", code="100/33", **labels) == 3
    assert metric(client, "leadgate_meta_leadgen_total", page=LEAD_PAGE_ID, result="retry") == 5


async def test_a_lead_that_never_comes_is_dead_with_its_id_and_can_be_retried(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    sample_lead(graph, "123123123123")
    sample_lead(graph, "123123123124")
    graph.revoke(LEAD_PAGE_TOKEN)
    client = await make_client(inbox={"max_attempts": 3})
    assert (await post(client, fixture_bytes(SAMPLE))).status == 200
    stats = await drained(client)
    assert stats["meta.leadgen"].dead == 2
    dead = await client.app[STORE].list_inbox(InboxState.DEAD, 10)
    assert sorted(e.key for e in dead) == ["123123123123", "123123123124"]
    assert all(e.account == LEAD_PAGE_ID and e.attempts == 3 for e in dead)
    assert all("Graph API 190" in (e.last_error or "") for e in dead)
    ready = await (await client.get("/readyz")).json()
    assert ready["status"] == "degraded"
    (refused,) = [p for p in ready["problems"] if p.startswith("meta:")]
    # /readyz is open and masked like a log: a page id is as long as a phone, so the page
    # is named by its last digits there (metrics carry it whole, as a label).
    assert LEAD_PAGE_ID[-4:] in refused and "renew" in refused
    assert any("could not be handled" in p for p in ready["problems"])
    assert LEAD_PAGE_TOKEN not in json.dumps(ready)
    assert metric(client, "leadgate_meta_token_refused", account=LEAD_PAGE_ID) == 1
    assert await leads(client) == []
    # The operator renews the token and retries the dead entries (leadgate inbox retry).
    graph.revoked.clear()
    assert await client.app[STORE].retry_inbox(None, datetime.now(UTC)) == 2
    await drained(client)
    assert len(await leads(client)) == 2
    assert metric(client, "leadgate_meta_token_refused", account=LEAD_PAGE_ID) == 0

    async def healthy() -> bool:
        ready = await (await client.get("/readyz")).json()
        return not [p for p in ready["problems"] if p.startswith("meta:")]

    await eventually(healthy, what="/readyz without the refused token")


async def test_a_page_without_a_token_is_dead_at_once(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    client = await make_client(meta={"pages": []})
    assert (await post(client, fixture_bytes(SAMPLE))).status == 200
    stats = await drained(client)
    assert stats["meta.leadgen"].dead == 2
    dead = await client.app[STORE].list_inbox(InboxState.DEAD, 10)
    assert {e.attempts for e in dead} == {1}
    assert all("has no token in [[meta.pages]]" in (e.last_error or "") for e in dead)
    assert graph.calls == []
