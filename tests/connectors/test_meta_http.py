"""/v1/meta over HTTP against the Graph API stand-in: the subscription check, signatures on
raw bytes, the body kept in the inbox before the 200 and handled after, batches, what each
item becomes, names, unreadable input. (Lead Ads: test_meta_leadads.py; answers:
test_meta_replies.py.)"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from conftest import ADMIN_AUTH
from meta_standin import MetaGraphStandIn
from meta_support import (
    APP_SECRET,
    IG_ID,
    IG_TOKEN,
    LEAD_PAGE_ID,
    PAGE_ID,
    PSID,
    VERIFY_TOKEN,
    MakeClient,
    as_meta_sends,
    drained,
    envelope,
    eventually,
    fixture,
    fixture_bytes,
    graph,  # noqa: F401  (a fixture)
    leads,
    make_client,  # noqa: F401  (a fixture)
    metric,
    post,
    sample_lead,
    sign,
    text_body,
)
from store_view import all_events, all_quarantine

from gateway.inbox import InboxState
from gateway.keys import STORE
from gateway.models import Channel

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


# --- signatures and the inbox ----------------------------------------------------------


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
    assert await store.list_inbox(None, 10) == []
    assert await all_events(store) == [] and await all_quarantine(store) == []
    assert metric(client, "leadgate_meta_webhooks_total", object="unknown", result="unauthorized")


async def test_cyrillic_as_meta_sends_it_becomes_a_chat_lead(
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
    # The 200 came after the body was stored: it is in the inbox, byte for byte.
    (kept,) = await client.app[STORE].list_inbox(None, 10)
    assert (kept.channel, kept.account, kept.body) == ("meta", PAGE_ID, raw)
    await drained(client)
    (lead,) = await leads(client)
    assert lead.channel is Channel.FACEBOOK
    assert lead.source_id == "UC_FACEBOOK"
    assert lead.contact.name == "Иван Петров"
    assert lead.contact.phones == ("+79161234567",)
    assert lead.contact.handles == (f"fb:{PSID}",)
    shown = await (await client.get(f"/v1/leads/{lead.id}", headers=ADMIN_AUTH)).json()
    (conversation,) = shown["conversations"]
    assert (conversation["account"], conversation["chat"]) == (PAGE_ID, PSID)
    (line,) = shown["messages"]
    assert (line["direction"], line["text"]) == ("in", vector["text"])
    assert line["external_id"] == "mid.1457764197618:41d102a3e1ae206a38"
    # Meta delivers it again: a duplicate in the inbox, no second event.
    assert (await post(client, raw, vector["x_hub_signature_256"])).status == 200
    assert metric(client, "leadgate_meta_webhooks_total", object="page", result="duplicate") == 1
    await drained(client)
    assert len(await all_events(client.app[STORE])) == 1


async def test_the_same_message_in_another_batch_is_one_message(
    make_client: MakeClient,  # noqa: F811
) -> None:
    client = await make_client(meta={"pages": [{"id": PAGE_ID, "token": "t-1234567890"}]})
    first = text_body("mid.same", "Нужен станок")
    item = fixture("messenger_text.botman-test.json")["entry"][0]
    both = json.loads(first)
    both["entry"].append(item)  # another body: other bytes, the same mid inside
    assert (await post(client, first)).status == 200
    assert (await post(client, as_meta_sends(both))).status == 200
    await drained(client)
    ids = sorted(e.record.external_id for e in await all_events(client.app[STORE]))
    assert ids == ["mid.1480279487147:4388d3b344", "mid.same"]


async def test_a_body_of_one_person_is_kept_in_their_order_a_batch_of_several_is_not(
    make_client: MakeClient,  # noqa: F811
) -> None:
    client = await make_client(meta={"pages": [{"id": PAGE_ID, "token": "t-1234567890"}]})
    one = text_body("mid.one", "Нужен станок")
    several = json.loads(text_body("mid.two", "А цена?", sender="7345012345678901"))
    several["entry"].append(fixture("messenger_text.botman-test.json")["entry"][0])
    assert (await post(client, one)).status == 200
    assert (await post(client, as_meta_sends(several))).status == 200
    kept = await client.app[STORE].list_inbox()
    assert [entry.thread for entry in kept] == [PSID, None]


async def test_the_published_vector_of_another_meta_product_is_ignored(
    make_client: MakeClient,  # noqa: F811
) -> None:
    vector = fixture("signature_vector_pywa.meta.json")
    client = await make_client(meta={"app_secret": vector["app_secret"]})
    raw = fixture_bytes(vector["body_file"])
    resp = await post(client, raw, vector["x_hub_signature_256"])
    assert resp.status == 200  # authentic; a WhatsApp subscription is not ours to read
    assert not (await drained(client)).get("meta")
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
        assert (await post(client, fixture_bytes(name))).status == 200
    await drained(client)
    assert await all_events(client.app[STORE]) == []
    assert metric(
        client, "leadgate_meta_items_total", channel="facebook", account=PAGE_ID, kind="echo"
    )


async def test_an_edit_rewrites_the_line(
    make_client: MakeClient,  # noqa: F811
) -> None:
    client = await make_client()
    assert (await post(client, text_body("m_1", "Нужен подъёмник на 3 тонны"))).status == 200
    edit = {
        "sender": {"id": PSID},
        "recipient": {"id": PAGE_ID},
        "timestamp": 1772445660000,
        "message_edit": {"mid": "m_1", "text": "Нужен подъёмник на 4 тонны", "num_edit": 1},
    }
    assert (await post(client, as_meta_sends(envelope("page", PAGE_ID, edit)))).status == 200
    await drained(client)
    (lead,) = await leads(client)
    shown = await (await client.get(f"/v1/leads/{lead.id}", headers=ADMIN_AUTH)).json()
    (line,) = shown["messages"]
    assert line["text"] == "Нужен подъёмник на 4 тонны" and line["edited_at"]


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
    await drained(client)
    assert graph.count("GET", PSID) == 1
    assert graph.calls[0].params == {"fields": "first_name,last_name"}
    # The second person's profile is refused: the page is not asked again for a while,
    # and the messages are leads all the same.
    for n in range(2):
        body = text_body(f"m.x{n}", "Нужен станок", sender="2000000000000002")
        assert (await post(client, body)).status == 200
    await drained(client)
    assert graph.count("GET", "2000000000000002") == 1
    found = {lead.contact.handles[0]: lead.contact.name for lead in await leads(client)}
    assert found == {f"fb:{PSID}": "Иван Петров", "fb:2000000000000002": None}
    assert metric(client, "leadgate_meta_names_total", account=PAGE_ID, result="cached") == 2


async def test_a_slow_graph_does_not_hold_up_messages_they_go_on_without_names(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    graph.person(PSID, {"first_name": "Иван"})
    graph.person("2000000000000002", {"first_name": "Мария"})
    graph.hold = asyncio.Event()  # Graph takes the profile reads and never answers
    client = await make_client(meta={"name_timeout_seconds": 0.3, "graph_timeout_seconds": 60})
    started = asyncio.get_running_loop().time()
    assert (await post(client, text_body("m.1", "Здравствуйте"))).status == 200
    body = text_body("m.2", "Нужен станок", sender="2000000000000002")
    assert (await post(client, body)).status == 200
    await drained(client)
    # One bounded wait, then the page is let be: the second person is not asked at all.
    assert asyncio.get_running_loop().time() - started < 5
    assert graph.count("GET", "2000000000000002") == 0
    found = {lead.contact.handles[0]: lead.contact.name for lead in await leads(client)}
    assert found == {f"fb:{PSID}": None, "fb:2000000000000002": None}
    assert metric(client, "leadgate_meta_names_total", account=PAGE_ID, result="timeout") == 1
    graph.hold.set()


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
    await drained(client)
    (lead,) = await leads(client)
    assert lead.channel is Channel.INSTAGRAM and lead.source_id == "UC_INSTAGRAM"
    assert lead.contact.name == "@ivan.petrov"
    assert lead.contact.handles == (f"ig:{igsid}",)
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
    (kept,) = await client.app[STORE].list_inbox(None, 10)
    assert kept.account == "batch"  # entries of two pages
    await drained(client)
    found = await leads(client)
    assert len(found) == 302
    assert {lead.channel for lead in found} == {Channel.FACEBOOK}
    assert graph.count("GET") == 2  # names off for that page: only the two leads were read


# --- unreadable input -----------------------------------------------------------------------


async def test_a_released_body_that_still_fails_is_quarantined_again_not_lost(
    make_client: MakeClient,  # noqa: F811
) -> None:
    from datetime import UTC, datetime

    from gateway.store.base import QuarantineState

    client = await make_client()
    store = client.app[STORE]
    good = fixture("messenger_text.botman-test.json")["entry"][0]
    mixed = as_meta_sends({"object": "page", "entry": [{"id": PAGE_ID, "messaging": [7]}, good]})
    assert (await post(client, mixed)).status == 200
    await drained(client)
    (kept,) = await all_quarantine(store, "meta")
    # A person releases it (`leadgate quarantine release`): the Meta connector runs it
    # again, and since part of it still cannot be read, it is kept again with the reason.
    now = datetime.now(UTC)
    assert await store.mark_quarantine(kept.id, QuarantineState.RELEASE, "try", now)

    async def answered() -> object:
        entry = await store.get_quarantine(kept.id)
        return entry if entry is not None and entry.state is not QuarantineState.RELEASE else None

    entry = await eventually(answered, what="the release answered")
    assert entry.state is QuarantineState.KEPT
    assert "still partly unreadable" in (entry.note or "") and "messaging[0]" in entry.note
    assert entry.body == mixed
    (lead,) = await leads(client)  # its readable rest was taken once, not twice
    assert len((await store.get_lead(lead.id)).events) == 1  # type: ignore[union-attr]


async def test_authentic_but_unreadable_input_is_kept_for_a_person(
    make_client: MakeClient,  # noqa: F811
) -> None:
    client = await make_client()
    store = client.app[STORE]
    raw = b'{"object": "page", "entry": "not a list"}'
    assert (await post(client, raw)).status == 200  # kept; a retry would not read better
    stats = await drained(client)
    assert stats["meta"].dead == 1
    (dead,) = await store.list_inbox(InboxState.DEAD, 10)
    assert dead.body == raw and "entry" in (dead.last_error or "")
    assert dead.headers["X-Hub-Signature-256"] == sign(raw)
    ready = await (await client.get("/readyz")).json()
    assert any("could not be handled" in p for p in ready["problems"])
    good = fixture("messenger_text.botman-test.json")["entry"][0]
    mixed = as_meta_sends({"object": "page", "entry": [{"id": PAGE_ID, "messaging": [7]}, good]})
    assert (await post(client, mixed)).status == 200
    await drained(client)
    (kept,) = await all_quarantine(store, "meta")
    assert kept.body == mixed and "messaging[0]" in kept.reason
    (lead,) = await leads(client)  # the readable rest was taken
    assert lead.contact.handles == (f"fb:{PSID}",)
