"""POST /v1/vk end to end: real-format events in, leads out, VK's API answered by the
stand-in. The secret first, confirmation per community, `ok` for everything accepted."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from vk_standin import VkStandIn, deliver
from vk_support import (
    CONFIRMATION,
    GROUP,
    OTHER_CONFIRMATION,
    OTHER_GROUP,
    OTHER_SECRET,
    SECRET,
    TOKEN,
    MakeClient,
    all_events,
    community,
    event,
    lead,
    load,
    make_client,
    metric,
    post,
    send,
    settle,
    standin,
    vk_events,
)

from gateway.inbox import InboxState
from gateway.keys import STORE
from gateway.models import LeadStatus

__all__ = ["make_client", "standin"]  # pytest fixtures, used by name


# --- who may post ------------------------------------------------------------------------


async def test_confirmation_answers_each_communitys_string(make_client: MakeClient) -> None:
    client = await make_client(
        community(),
        community(group_id=OTHER_GROUP, secret=OTHER_SECRET, confirmation=OTHER_CONFIRMATION),
    )
    body = load("callback_confirmation_with_secret.vksdk-test.json")  # group 123456
    body["secret"] = OTHER_SECRET
    resp = await client.post("/v1/vk", json=body)
    assert resp.status == 200 and await resp.text() == OTHER_CONFIRMATION
    assert resp.content_type == "text/plain"
    assert await send(client, event("callback_confirmation.vksdk-test.json", group_id=GROUP)) == (
        200,
        CONFIRMATION,
    )
    assert (
        metric(
            client,
            "leadgate_vk_events_total",
            community=str(GROUP),
            type="confirmation",
            result="confirmation",
        )
        == 1
    )


@pytest.mark.parametrize(
    "secret", [None, "", "wrong-secret-of-the-right-length", SECRET + "x", SECRET.lower()]
)
async def test_a_wrong_or_missing_secret_is_403_and_nothing_is_stored(
    make_client: MakeClient, secret: str | None
) -> None:
    client = await make_client()
    for name in ("lead_forms_new.comfort-test.json", "callback_confirmation.vksdk-test.json"):
        body = event(name, group_id=GROUP, secret=secret)
        if secret is None:
            del body["secret"]
        resp = await client.post("/v1/vk", json=body)
        assert resp.status == 403
        assert (await resp.json())["error"] == "forbidden"
    assert await all_events(client) == []
    assert await client.app[STORE].list_quarantine() == []
    assert (
        metric(
            client,
            "leadgate_vk_events_total",
            community="unknown",
            type="unknown",
            result="unauthorized",
        )
        == 2
    )


async def test_the_secret_of_one_community_does_not_open_another(make_client: MakeClient) -> None:
    client = await make_client(
        community(),
        community(group_id=OTHER_GROUP, secret=OTHER_SECRET, confirmation=OTHER_CONFIRMATION),
    )
    body = event("lead_forms_new.comfort-test.json", group_id=OTHER_GROUP)  # GROUP's secret
    resp = await client.post("/v1/vk", json=body)
    assert resp.status == 403 and (await resp.json())["error"] == "unknown_group"
    body = event("lead_forms_new.comfort-test.json", group_id=999)
    resp = await client.post("/v1/vk", json=body)
    assert resp.status == 403 and (await resp.json())["error"] == "unknown_group"
    assert await all_events(client) == []


async def test_bodies_that_are_not_events_are_refused(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await client.post("/v1/vk", data=b"type=confirmation&group_id=1")
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_json"
    resp = await client.post("/v1/vk", data=b"[1, 2]")
    assert resp.status == 400
    deep: object = {"secret": SECRET, "group_id": GROUP, "type": "x"}
    for _ in range(40):
        deep = {"object": deep}
    resp = await client.post("/v1/vk", json=deep)
    assert resp.status == 400
    resp = await client.post("/v1/vk", data=b"{" + b" " * (300 * 1024) + b"}")
    assert resp.status == 413 and (await resp.json())["error"] == "body_too_large"
    assert await all_events(client) == []


# --- what becomes what ---------------------------------------------------------------------


async def test_lead_form_becomes_a_lead_once_whatever_vk_repeats(
    make_client: MakeClient, standin: VkStandIn
) -> None:
    client = await make_client()
    body = event("lead_forms_new.comfort-test.json")
    assert await send(client, body) == (200, "ok")
    # VK repeats an event it thinks was not taken, with the same event_id.
    assert await send(client, body, **{"X-Retry-Counter": "1"}) == (200, "ok")
    (stored,) = await vk_events(client)
    found = await lead(client, stored.lead_id)
    assert found.contact.name == "Ivan Ivanov"  # typed into the form: no users.get needed
    assert found.contact.phones == ("+78005553535",)
    assert found.contact.handles == ("vk:111111111",)
    assert found.source_id == "UC_VK" and found.status is LeadStatus.NEW
    assert stored.record.source_detail == "Оборудование, лид-форма «Оформить заказ»"
    assert standin.called("users.get") == []
    labels = {"community": str(GROUP), "type": "lead_forms_new"}
    assert metric(client, "leadgate_vk_events_total", **labels, result="stored") == 1
    assert metric(client, "leadgate_vk_events_total", **labels, result="duplicate") == 1
    assert metric(client, "leadgate_vk_events_total", **labels, result="accepted") == 1


async def test_wall_reply_is_named_with_users_get_and_joins_the_persons_lead(
    make_client: MakeClient, standin: VkStandIn
) -> None:
    client = await make_client()
    first = event("wall_reply_new.schema-built.json")
    assert await send(client, first) == (200, "ok")
    second = event(
        "wall_reply_new.schema-built.json",
        event_id="5bc800714b87af89b7b9ee731e8759acd3b41600",
        object=dict(first["object"], id=513, text="И ещё: нужен ли монтаж?"),
    )
    assert await send(client, second) == (200, "ok")
    a, b = await vk_events(client)
    assert a.lead_id == b.lead_id and b.record.outcome == "merged"
    assert b.record.matched_on == "vk"
    found = await lead(client, a.lead_id)
    assert found.contact.name == "Мария Смирнова"  # not vk:612444319
    assert found.contact.phones == ("+79167654321",)
    assert (
        a.record.text is not None and "https://vk.com/wall-11111111_143?reply=512" in a.record.text
    )
    # The second comment's author was known: the cache answered, VK was asked once.
    assert len(standin.called("users.get")) == 1
    assert standin.called("users.get")[0]["v"] == "5.199"


async def test_market_order_is_an_order_lead(make_client: MakeClient) -> None:
    client = await make_client()
    assert await send(client, event("market_order_new.schema-built.json")) == (200, "ok")
    (stored,) = await vk_events(client)
    found = await lead(client, stored.lead_id)
    assert found.contact.name == "Павел Дуров"
    assert found.interest.probable_equipment is not None
    assert "Компрессор поршневой 500 л/мин × 1 — 45 000 ₽" in found.interest.probable_equipment
    assert stored.record.text is not None and "Итого: 47 500 ₽" in stored.record.text
    assert stored.record.meta["total"] == "47500"


async def test_permission_events_are_recorded_on_the_open_lead_only(
    make_client: MakeClient,
) -> None:
    client = await make_client()
    allow = event("message_allow.schema-built.json")
    assert await send(client, allow) == (200, "ok")
    (kept,) = await vk_events(client)
    assert kept.lead_id is None and kept.record.outcome == "kept"  # no lead of this person
    full = event("lead_forms_new.full.schema-built.json", secret=SECRET)  # same user
    assert await send(client, full) == (200, "ok")
    assert await send(client, event("message_deny.schema-built.json")) == (200, "ok")
    _, created, denied = await vk_events(client)
    assert created.record.outcome == "created"
    assert denied.lead_id == created.lead_id and denied.record.outcome == "merged"
    assert denied.record.text == "Запретил сообщения от сообщества"


async def test_a_phone_given_later_joins_the_persons_other_leads(make_client: MakeClient) -> None:
    client = await make_client()
    comment = event(
        "wall_reply_new.schema-built.json",
        object=dict(
            event("wall_reply_new.schema-built.json")["object"],
            from_id=463526827,
            text="Сколько стоит?",
        ),
    )
    assert await send(client, comment) == (200, "ok")
    # The same person fills in a lead form with their phone: it joins by their handle ...
    assert await send(client, event("lead_forms_new.full.schema-built.json")) == (200, "ok")
    # ... and a site form with that phone joins the same lead.
    resp = await client.post("/v1/forms/site", json={"name": "Иван", "phone": "8 916 123 45 67"})
    assert resp.status in (200, 201)
    receipt = await resp.json()
    events = await all_events(client)
    assert len({e.lead_id for e in events}) == 1
    assert receipt["lead_id"] == events[0].lead_id
    found = await lead(client, receipt["lead_id"])
    assert found.contact.phones == ("+79161234567",)
    assert found.contact.handles == ("vk:463526827",)


async def test_unknown_and_untaken_event_types_are_acknowledged_not_stored(
    make_client: MakeClient,
) -> None:
    client = await make_client(community(market_orders=False))
    for body in (
        event("group_join.dev-vk-docs.json", group_id=GROUP),
        event("wall_post_new_photo.firebase-bot-test.json", group_id=GROUP, secret=SECRET),
        event("market_order_new.schema-built.json"),  # switched off for this community
        event("group_join.dev-vk-docs.json", group_id=GROUP, type="something_new_from_vk"),
    ):
        assert await send(client, body) == (200, "ok")
    assert await all_events(client) == []
    labels = {"community": str(GROUP), "result": "ignored"}
    assert metric(client, "leadgate_vk_events_total", type="group_join", **labels) == 1
    assert metric(client, "leadgate_vk_events_total", type="other", **labels) == 1


async def test_an_authentic_unreadable_event_is_kept_and_acknowledged(
    make_client: MakeClient,
) -> None:
    client = await make_client()
    body = event("lead_forms_new.comfort-test.json")
    del body["object"]["lead_id"]
    # Not ok would make VK repeat it and, after several, pause the whole server.
    assert await send(client, body) == (200, "ok")
    assert await vk_events(client) == []
    (dead,) = await client.app[STORE].list_inbox(InboxState.DEAD)
    assert dead.channel == "vk" and dead.account == str(GROUP)
    assert dead.last_error is not None and "lead_id" in dead.last_error
    assert SECRET.encode() not in dead.body  # the secret is not kept with it
    labels = {"community": str(GROUP), "type": "lead_forms_new", "result": "invalid"}
    assert metric(client, "leadgate_vk_events_total", **labels) == 1
    # A body that is no event at all, with the right secret: kept in the quarantine.
    assert await send(client, {"secret": SECRET, "group_id": GROUP}) == (200, "ok")
    (kept,) = await client.app[STORE].list_quarantine("vk")
    assert "no event type" in kept.reason and SECRET.encode() not in kept.body


# --- VK's API slow or refusing: the answer to VK does not wait -----------------------------


async def test_a_slow_vk_api_does_not_hold_the_answer(
    make_client: MakeClient, standin: VkStandIn
) -> None:
    client = await make_client()
    standin.delay["users.get"] = 3.0
    started = time.monotonic()
    assert await post(client, event("wall_reply_new.schema-built.json")) == (200, "ok")
    # VK got its ok at once: the event was kept and is handled after the answer.
    assert time.monotonic() - started < 2.0
    assert await vk_events(client) == []
    await settle(client)
    (stored,) = await vk_events(client)
    assert stored.record.contact.name == "Мария Смирнова"  # the name came, late


async def test_a_refused_token_still_makes_the_lead(
    make_client: MakeClient, standin: VkStandIn
) -> None:
    client = await make_client()
    standin.revoke(TOKEN)
    assert await send(client, event("market_order_new.schema-built.json")) == (200, "ok")
    (stored,) = await vk_events(client)
    assert stored.record.contact.name is None and stored.lead_id is not None
    labels = {"community": str(GROUP), "method": "users.get", "result": "auth"}
    assert metric(client, "leadgate_vk_api_calls_total", **labels) == 1


async def test_vks_own_retries_stop_at_the_first_ok(
    make_client: MakeClient, standin: VkStandIn
) -> None:
    client = await make_client()
    url = str(client.make_url("/v1/vk"))
    answers = await deliver(url, event("lead_forms_new.comfort-test.json"))
    assert answers == [(200, "ok")]
    answers = await deliver(url, event("lead_forms_new.comfort-test.json", secret="x" * 24))
    assert [status for status, _ in answers] == [403, 403, 403]
    await settle(client)
    assert len(await vk_events(client)) == 1


async def test_secrets_never_reach_the_log(
    make_client: MakeClient, standin: VkStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await make_client()
    standin.revoke(TOKEN)
    await send(client, event("wall_reply_new.schema-built.json"))
    await send(client, event("lead_forms_new.comfort-test.json", secret="wrong" * 5))
    await asyncio.sleep(0)
    text = caplog.text
    assert TOKEN not in text and SECRET not in text
