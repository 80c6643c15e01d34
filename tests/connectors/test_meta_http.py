"""/v1/meta over HTTP against the Graph API stand-in: the subscription check, signatures on
raw bytes, batches, Lead Ads fetched with retries, names, refused tokens."""

from __future__ import annotations

from typing import Any

from meta_standin import MetaGraphStandIn
from meta_support import (
    APP_SECRET,
    IG_ID,
    IG_TOKEN,
    LEAD_PAGE_ID,
    PAGE_ID,
    PSID,
    VERIFY_TOKEN,
    Client,
    MakeClient,
    as_meta_sends,
    envelope,
    fixture,
    fixture_bytes,
    graph,  # noqa: F401  (a fixture)
    make_client,  # noqa: F401  (a fixture)
    post,
    sign,
)
from store_view import all_events, all_leads, all_quarantine

from gateway.keys import METRICS, STORE
from gateway.models import Channel, Lead


def metric(client: Client, name: str, **labels: str) -> float:
    return client.app[METRICS].registry.get_sample_value(name, labels) or 0.0


async def leads(client: Client) -> list[Lead]:
    return await all_leads(client.app[STORE])


def text_body(mid: str, text: str, sender: str = PSID) -> bytes:
    item = {
        "sender": {"id": sender},
        "recipient": {"id": PAGE_ID},
        "timestamp": 1772445600000,
        "message": {"mid": mid, "text": text},
    }
    return as_meta_sends(envelope("page", PAGE_ID, item))


def sample_lead(standin: MetaGraphStandIn, lead_id: str, **answers: str) -> None:
    """Meta's sample lead under `lead_id`, its answers changed or added as given (each
    lead its own email: the same address twice is one person, one lead)."""
    lead = fixture("lead_retrieve_response.meta-docs.json")
    lead["ad_id"], lead["form_id"] = "12312312312", "12312312312"
    answers.setdefault("email", f"joe.{lead_id}@example.com")
    fields = {f["name"]: f["values"] for f in lead["field_data"]}
    fields.update({k: [v] for k, v in answers.items()})
    lead["field_data"] = [{"name": k, "values": v} for k, v in fields.items()]
    standin.add_lead(LEAD_PAGE_ID, lead, lead_id=lead_id)


# --- the subscription check ---------------------------------------------------------------


async def test_subscription_echoes_the_challenge_for_the_right_token(
    make_client: MakeClient,  # noqa: F811
) -> None:
    client = await make_client()
    query = {"hub.mode": "subscribe", "hub.challenge": "1158201444"}
    resp = await client.get("/v1/meta", params={**query, "hub.verify_token": VERIFY_TOKEN})
    assert resp.status == 200
    assert await resp.text() == "1158201444"
    assert resp.headers["Content-Type"].startswith("text/plain")
    for wrong in ({"hub.verify_token": "meatyhamhock"}, {}):
        resp = await client.get("/v1/meta", params={**query, **wrong})
        assert resp.status == 403
        assert (await resp.json())["error"] == "forbidden"
    resp = await client.get(
        "/v1/meta", params={**query, "hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN}
    )
    assert resp.status == 400
    resp = await client.get(
        "/v1/meta",
        params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": ""},
    )
    assert resp.status == 400


async def test_no_meta_section_no_route(aiohttp_client: Any, tmp_path: Any) -> None:
    from conftest import make_settings

    from gateway.web import create_app

    client = await aiohttp_client(create_app(make_settings(tmp_path)))
    assert (await client.post("/v1/meta", data=b"{}")).status == 404


# --- signatures -----------------------------------------------------------------------------


async def test_a_missing_or_wrong_signature_is_403_and_nothing_is_kept(
    make_client: MakeClient,  # noqa: F811
) -> None:
    client = await make_client()
    raw = fixture_bytes("messenger_text_cyrillic.body.json")
    for header in (None, "", "sha256=" + "0" * 64, sign(raw, "another-app-secret"), "sha1=abc"):
        resp = await post(client, raw, header)
        assert resp.status == 403, header
        assert (await resp.json())["error"] == "forbidden"
    # Signed over other bytes (the JSON re-serialised with the letters as UTF-8): refused.
    resp = await post(client, raw, sign(raw.decode("unicode_escape").encode()))
    assert resp.status == 403
    store = client.app[STORE]
    assert await all_events(store) == [] and await all_quarantine(store) == []
    assert metric(client, "leadgate_meta_webhooks_total", object="unknown", result="unauthorized")


async def test_cyrillic_as_meta_sends_it_becomes_a_lead(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    graph.person(PSID, {"first_name": "Иван", "last_name": "Петров"})
    client = await make_client()
    vector = fixture("messenger_text_cyrillic.meta.json")
    assert vector["app_secret"] == APP_SECRET
    raw = fixture_bytes(vector["body_file"])
    resp = await post(client, raw, vector["x_hub_signature_256"])
    assert resp.status == 200, await resp.text()
    (lead,) = await leads(client)
    assert lead.channel is Channel.FACEBOOK
    assert lead.source_id == "UC_FACEBOOK"
    assert lead.contact.name == "Иван Петров"
    assert lead.contact.phones == ("+79161234567",)
    assert lead.contact.handles == (f"fb:{PSID}",)
    full = await client.app[STORE].get_lead(lead.id)
    assert full is not None and full.events[0].text == vector["text"]
    # Meta delivers it again: the same message, no second event.
    assert (await post(client, raw, vector["x_hub_signature_256"])).status == 200
    assert len(await all_events(client.app[STORE])) == 1


async def test_the_published_vector_of_another_meta_product_is_ignored(
    make_client: MakeClient,  # noqa: F811
) -> None:
    vector = fixture("signature_vector_pywa.meta.json")
    client = await make_client(meta={"app_secret": vector["app_secret"]})
    raw = fixture_bytes(vector["body_file"])
    resp = await post(client, raw, vector["x_hub_signature_256"])
    assert resp.status == 200  # authentic; a WhatsApp subscription is not ours to read
    assert await all_events(client.app[STORE]) == []
    assert metric(
        client,
        "leadgate_meta_webhooks_total",
        object="whatsapp_business_account",
        result="ignored",
    )


# --- what becomes what ----------------------------------------------------------------------


async def test_echoes_and_receipts_are_not_customers(
    make_client: MakeClient,  # noqa: F811
) -> None:
    client = await make_client()
    for name in (
        "messenger_echo.botman-test.json",
        "messenger_delivery.botman-test.json",
        "messenger_read.botman-test.json",
    ):
        raw = fixture_bytes(name)
        assert (await post(client, raw)).status == 200
    assert await all_events(client.app[STORE]) == []
    assert metric(
        client, "leadgate_meta_items_total", channel="facebook", account=PAGE_ID, kind="echo"
    )


async def test_names_are_asked_once_and_a_refusal_stops_nothing(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    graph.person(PSID, {"first_name": "Иван", "last_name": "Петров", "profile_pic": "x"})
    graph.person("2000000000000002", {"first_name": "Мария"})
    graph.private_profiles.add("2000000000000002")
    client = await make_client()
    for n in range(3):
        assert (await post(client, text_body(f"m.{n}", "Здравствуйте"))).status == 200
    assert graph.count("GET", PSID) == 1
    assert graph.calls[0].params == {"fields": "first_name,last_name"}
    # The second person's profile is refused: the page is not asked again for a while,
    # and the messages are leads all the same.
    for n in range(2):
        body = text_body(f"m.x{n}", "Нужен станок", sender="2000000000000002")
        assert (await post(client, body)).status == 200
    assert graph.count("GET", "2000000000000002") == 1
    found = {lead.contact.handles[0]: lead.contact.name for lead in await leads(client)}
    assert found == {f"fb:{PSID}": "Иван Петров", "fb:2000000000000002": None}
    assert metric(client, "leadgate_meta_names_total", account=PAGE_ID, result="cached") == 2


async def test_instagram_direct_with_instagram_login(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    igsid = "6412849022070011"
    graph.person(igsid, {"name": "", "username": "ivan.petrov"}, instagram=True)
    client = await make_client()
    item = {
        "sender": {"id": igsid},
        "recipient": {"id": IG_ID},
        "timestamp": 1772445600000,
        "message": {"mid": "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQx", "text": "Привет"},
    }
    assert (await post(client, as_meta_sends(envelope("instagram", IG_ID, item)))).status == 200
    (lead,) = await leads(client)
    assert lead.channel is Channel.INSTAGRAM and lead.source_id == "UC_INSTAGRAM"
    assert lead.contact.name == "@ivan.petrov"
    (call,) = graph.calls
    assert call.account == IG_ID and call.params == {"fields": "name,username"}
    assert IG_TOKEN not in str(graph.calls)


async def test_a_batch_of_many_entries_is_taken_whole(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    sample_lead(graph, "123123123123")
    sample_lead(graph, "123123123124", phone_number="+7 916 765-43-21")
    client = await make_client(
        meta={
            "pages": [
                {"id": PAGE_ID, "token": "EAAPageTokenForTests0001", "fetch_names": False},
                {"id": LEAD_PAGE_ID, "token": "EAALeadPageTokenForTests02"},
            ]
        }
    )
    entries = []
    for n in range(300):
        entry = fixture("messenger_text.botman-test.json")["entry"][0]
        entry["messaging"][0]["message"]["mid"] = f"mid.batch.{n}"
        entry["messaging"][0]["sender"]["id"] = str(3 * 10**15 + n)
        entries.append(entry)
    entries.append(fixture("leadgen_webhook_two_changes.meta-docs.json")["entry"][0])
    raw = as_meta_sends({"object": "page", "entry": entries})
    resp = await post(client, raw)
    assert resp.status == 200, await resp.text()
    found = await leads(client)
    assert len(found) == 302
    assert {lead.channel for lead in found} == {Channel.FACEBOOK}
    assert graph.count("GET") == 2  # names off for that page: only the two leads were read


# --- Lead Ads -------------------------------------------------------------------------------


async def test_leadgen_answers_are_fetched_and_mapped(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    sample_lead(graph, "123123123123", phone_number="+7 (916) 111-22-33")
    sample_lead(graph, "123123123124", company_name="ООО Ромашка")
    client = await make_client()
    raw = fixture_bytes("leadgen_webhook_two_changes.meta-docs.json")
    resp = await post(client, raw)
    assert resp.status == 200, await resp.text()
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
    # Meta's retry of the same body: replays, no new leads.
    assert (await post(client, raw)).status == 200
    assert len(await leads(client)) == 2
    page = LEAD_PAGE_ID
    assert metric(client, "leadgate_meta_leadgen_total", page=page, result="accepted") == 2
    assert metric(client, "leadgate_meta_leadgen_total", page=page, result="replayed") == 2


async def test_a_lead_not_readable_yet_is_not_lost(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    sample_lead(graph, "123123123123")
    sample_lead(graph, "123123123124")
    graph.lead_appears_after("123123123124", reads=1)
    graph.fail("page_rate", path="^123123123123$")
    client = await make_client()
    raw = fixture_bytes("leadgen_webhook_two_changes.meta-docs.json")
    resp = await post(client, raw)
    assert resp.status == 503  # Meta delivers the body again
    assert (await resp.json())["error"] == "graph_unavailable"
    assert await leads(client) == []
    assert metric(
        client, "leadgate_meta_graph_errors_total", account=LEAD_PAGE_ID, call="lead", code="32"
    )
    assert metric(
        client,
        "leadgate_meta_graph_errors_total",
        account=LEAD_PAGE_ID,
        call="lead",
        code="100/33",
    )
    assert (await post(client, raw)).status == 200
    assert len(await leads(client)) == 2


async def test_a_refused_token_shows_on_readyz_until_it_works_again(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    sample_lead(graph, "123123123123")
    sample_lead(graph, "123123123124")
    graph.revoke("EAALeadPageTokenForTests02")
    client = await make_client()
    raw = fixture_bytes("leadgen_webhook_two_changes.meta-docs.json")
    assert (await post(client, raw)).status == 503
    ready = await (await client.get("/readyz")).json()
    assert ready["status"] == "degraded"
    (problem,) = [p for p in ready["problems"] if p.startswith("meta:")]
    assert LEAD_PAGE_ID in problem and "Graph API 190" in problem and "renew" in problem
    assert "EAALeadPageTokenForTests02" not in str(ready)
    assert metric(client, "leadgate_meta_token_refused", account=LEAD_PAGE_ID) == 1
    graph.revoked.clear()  # the operator put in a new token (here: the old one works again)
    assert (await post(client, raw)).status == 200
    ready = await (await client.get("/readyz")).json()
    assert not [p for p in ready["problems"] if p.startswith("meta:")]
    assert metric(client, "leadgate_meta_token_refused", account=LEAD_PAGE_ID) == 0


async def test_authentic_but_unreadable_input_is_kept_for_a_person(
    make_client: MakeClient,  # noqa: F811
) -> None:
    client = await make_client()
    store = client.app[STORE]
    raw = b'{"object": "page", "entry": "not a list"}'
    assert (await post(client, raw)).status == 200  # kept; a retry would not read better
    (kept,) = await all_quarantine(store, "meta")
    assert kept.body == raw and "entry" in kept.reason
    assert kept.headers["X-Hub-Signature-256"] == sign(raw)
    good = fixture("messenger_text.botman-test.json")["entry"][0]
    mixed = as_meta_sends({"object": "page", "entry": [{"id": PAGE_ID, "messaging": [7]}, good]})
    assert (await post(client, mixed)).status == 200
    assert len(await all_quarantine(store, "meta")) == 2
    (lead,) = await leads(client)  # the readable rest was taken
    assert lead.contact.handles == (f"fb:{PSID}",)
