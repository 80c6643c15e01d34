"""VK messages end to end: message_new in both shapes becomes a conversation, answers go out
through messages.send on the stand-in with random_id from our own message id, and VK's
errors end each message the way the issue asks (901, 950, 6/9/29, token refused)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from conftest import ADMIN_AUTH
from vk_standin import VkStandIn
from vk_support import (
    GROUP,
    TOKEN,
    Client,
    MakeClient,
    community,
    event,
    eventually,
    make_client,
    metric,
    send,
    standin,
    vk_events,
)

from connectors.vk.sender import WINDOW_CLOSED, random_id
from gateway.hours import DAYS

__all__ = ["make_client", "standin"]

MOSCOW = ZoneInfo("Europe/Moscow")
USER = 463526827  # the author of the pre-5.103 fixtures (VK's issue 40)


def closed_now() -> dict[str, Any]:
    """VK opens only the weekday after tomorrow, 10:00-11:00: closed now."""
    later = datetime.now(MOSCOW) + timedelta(days=2)
    return {"channels": {"vk": {DAYS[later.weekday()]: ["10:00-11:00"]}}}


def open_now() -> dict[str, Any]:
    today = datetime.now(MOSCOW).date()
    return {
        "channels": {"vk": {day: ["00:00-24:00"] for day in DAYS}},
        "extra_workdays": [str(today)],
    }


FAST = {"backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.1, "halt_probe_seconds": 0.2}


def bare(text: str = "Здравствуйте! Нужен подъёмник", cmid: int = 38, **kw: Any) -> dict[str, Any]:
    """The captured pre-5.103 message_new (object = the message) with our text."""
    kw.setdefault("event_id", f"evt-{cmid}")
    body = event("message_new_pre5103_bare.issue40.json", group_id=GROUP, **kw)
    body["object"] = dict(body["object"], text=text, conversation_message_id=cmid, id=cmid + 4)
    return body


async def lead_json(client: Client, lead_id: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/leads/{lead_id}", headers=ADMIN_AUTH)
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


async def only_lead(client: Client) -> dict[str, Any]:
    resp = await client.get("/v1/leads", headers=ADMIN_AUTH)
    (found,) = (await resp.json())["leads"]
    return await lead_json(client, found["id"])


async def settled(client: Client, lead_id: str) -> dict[str, Any]:
    async def calm() -> dict[str, Any] | None:
        lead = await lead_json(client, lead_id)
        busy = [m for m in lead["messages"] if m["status"] in ("queued", "retrying")]
        return None if busy else lead

    return await eventually(calm)


async def reply(client: Client, lead_id: str, text: str) -> dict[str, Any]:
    resp = await client.post(
        f"/v1/leads/{lead_id}/messages", json={"text": text}, headers=ADMIN_AUTH
    )
    body: dict[str, Any] = await resp.json()
    assert resp.status == 202, body
    return body


# --- receiving ------------------------------------------------------------------------------


async def test_a_5199_message_opens_a_conversation_named_by_users_get(
    make_client: MakeClient, standin: VkStandIn
) -> None:
    client = await make_client(calendar=open_now())
    body = event("message_new_v5.103plus.vkbottle-test.json")  # {message, client_info}
    assert await send(client, body) == (200, "ok")
    lead = await only_lead(client)
    (conversation,) = lead["conversations"]
    assert (conversation["channel"], conversation["account"], conversation["chat"]) == (
        "vk",
        str(GROUP),
        "1",
    )
    assert conversation["handle"] == "vk:1" and conversation["locale"] == "ru"
    assert lead["contact"]["name"] == "Павел Дуров"
    (line,) = lead["messages"]
    assert (line["direction"], line["author"], line["text"]) == ("in", "customer", "test")
    (stored,) = await vk_events(client)
    assert stored.record.external_id == f"{GROUP}:msg:1:1234"
    assert standin.sent == []  # open: no automatic answer


async def test_the_old_bare_shape_is_read_the_same(make_client: MakeClient) -> None:
    client = await make_client(calendar=open_now())
    assert await send(client, bare()) == (200, "ok")
    assert await send(client, bare("И компрессор", cmid=39)) == (200, "ok")
    lead = await only_lead(client)
    assert [m["text"] for m in lead["messages"]] == [
        "Здравствуйте! Нужен подъёмник",
        "И компрессор",
    ]
    assert [e["matched_on"] for e in lead["events"]] == [None, "conversation"]
    assert lead["contact"]["name"] == "Иван Петров"


async def test_vks_repeats_and_other_peoples_talk_make_nothing(make_client: MakeClient) -> None:
    client = await make_client(calendar=open_now())
    first = bare()
    assert await send(client, first) == (200, "ok")
    # VK repeats the event (same event_id): one inbox entry.
    assert await send(client, first, **{"X-Retry-Counter": "1"}) == (200, "ok")
    # The same message under another event_id: one event all the same.
    assert await send(client, dict(first, event_id="another-event-id")) == (200, "ok")
    # A group chat the community sits in, and our own outgoing message echoed back.
    for name in (
        "message_new_pre5103_bare_chat.issue40.json",
        "message_new_v5.131_client_info.pastebin.json",
        "message_reply_pre5103_bare.issue40.json",
    ):
        assert await send(client, event(name, group_id=GROUP)) == (200, "ok")
    assert len(await vk_events(client)) == 1
    labels = {"community": str(GROUP), "type": "message_new"}
    assert metric(client, "leadgate_vk_events_total", **labels, result="duplicate") == 1
    assert metric(client, "leadgate_vk_events_total", **labels, result="replayed") == 1
    assert metric(client, "leadgate_vk_events_total", **labels, result="ignored") == 2
    reply_labels = {"community": str(GROUP), "type": "message_reply", "result": "ignored"}
    assert metric(client, "leadgate_vk_events_total", **reply_labels) == 1


async def test_an_edit_rewrites_its_line(make_client: MakeClient) -> None:
    client = await make_client(calendar=open_now())
    assert await send(client, bare("Нужен подъёмник")) == (200, "ok")
    edit = bare("Нужен подъёмник на 5 тонн", type="message_edit", event_id="evt-edit")
    edit["object"]["update_time"] = edit["object"]["date"] + 30
    assert await send(client, edit) == (200, "ok")
    lead = await only_lead(client)
    (line,) = lead["messages"]
    assert line["text"] == "Нужен подъёмник на 5 тонн" and line["edited_at"] is not None


async def test_a_phone_in_a_message_joins_the_persons_calls_and_forms(
    make_client: MakeClient,
) -> None:
    client = await make_client(calendar=open_now())
    assert await send(client, bare("Перезвоните мне: +7 916 123-45-67")) == (200, "ok")
    resp = await client.post("/v1/forms/site", json={"name": "Иван", "phone": "89161234567"})
    receipt = await resp.json()
    lead = await only_lead(client)
    assert receipt["lead_id"] == lead["id"]
    assert lead["contact"]["phones"] == ["+79161234567"]


# --- answering ------------------------------------------------------------------------------


async def test_after_hours_answer_goes_out_once_with_a_random_id_of_our_own(
    make_client: MakeClient, standin: VkStandIn
) -> None:
    client = await make_client(calendar=closed_now(), conversations=FAST)
    standin.allowed.add((GROUP, USER))
    assert await send(client, bare()) == (200, "ok")
    assert await send(client, bare("Ещё вопрос", cmid=39)) == (200, "ok")
    lead = await settled(client, (await only_lead(client))["id"])
    auto = [m for m in lead["messages"] if m["author"] == "auto"]
    assert len(auto) == 1 and auto[0]["status"] == "sent"
    (delivered,) = standin.sent
    assert delivered.peer_id == USER and delivered.group_id == GROUP
    assert delivered.random_id == random_id(auto[0]["id"])
    assert auto[0]["external_id"] == str(delivered.message_id)
    assert "нерабочее время" in delivered.message


async def test_an_english_speaker_gets_the_answer_in_english(
    make_client: MakeClient, standin: VkStandIn
) -> None:
    client = await make_client(calendar=closed_now(), conversations=FAST)
    standin.allowed.add((GROUP, 1))
    body = event("message_new_v5.103plus.vkbottle-test.json")
    body["object"]["client_info"]["lang_id"] = 3  # VK's id of English
    assert await send(client, body) == (200, "ok")
    await settled(client, (await only_lead(client))["id"])
    (delivered,) = standin.sent
    assert "after" in delivered.message.lower() and "нерабочее" not in delivered.message


async def test_a_sellers_reply_is_sent_once_even_when_vks_answer_is_lost(
    make_client: MakeClient, standin: VkStandIn
) -> None:
    client = await make_client(calendar=open_now(), conversations=FAST)
    standin.allowed.add((GROUP, USER))
    assert await send(client, bare()) == (200, "ok")
    lead_id = (await only_lead(client))["id"]
    standin.lose_answers("messages.send")  # VK sends it, we never hear back
    queued = await reply(client, lead_id, "Здравствуйте, Иван! Подъёмник есть, 450 000 ₽.")
    lead = await settled(client, lead_id)
    line = next(m for m in lead["messages"] if m["id"] == queued["message_id"])
    assert line["status"] == "sent"
    assert len(standin.called("messages.send")) == 2  # tried again ...
    (delivered,) = standin.sent  # ... and VK kept it to one message by its random_id
    assert delivered.random_id == random_id(queued["message_id"])
    assert line["external_id"] == str(delivered.message_id)


async def test_vks_refusals_end_the_message_by_kind(
    make_client: MakeClient, standin: VkStandIn
) -> None:
    client = await make_client(calendar=open_now(), conversations=FAST)
    assert await send(client, bare()) == (200, "ok")
    lead_id = (await only_lead(client))["id"]

    # 901: the user never allowed the community's messages.
    first = await reply(client, lead_id, "Здравствуйте!")
    lead = await settled(client, lead_id)
    line = next(m for m in lead["messages"] if m["id"] == first["message_id"])
    assert line["status"] == "undeliverable"
    assert "901" in line["status_reason"] and "without permission" in line["status_reason"]

    # 950: the time to answer has passed.
    standin.window_closed.add((GROUP, USER))
    second = await reply(client, lead_id, "Вы ещё здесь?")
    lead = await settled(client, lead_id)
    line = next(m for m in lead["messages"] if m["id"] == second["message_id"])
    assert line["status"] == "undeliverable"
    assert line["status_reason"].startswith(WINDOW_CLOSED)
    standin.window_closed.clear()

    # 6 (too many requests): tried again, then sent.
    standin.allowed.add((GROUP, USER))
    standin.fail("messages.send", 6, times=1)
    third = await reply(client, lead_id, "Счёт отправили на почту")
    lead = await settled(client, lead_id)
    line = next(m for m in lead["messages"] if m["id"] == third["message_id"])
    assert line["status"] == "sent"
    assert [s.message for s in standin.sent] == ["Счёт отправили на почту"]


async def test_flood_control_waits_vks_pause(make_client: MakeClient, standin: VkStandIn) -> None:
    client = await make_client(calendar=open_now(), conversations=FAST)
    standin.allowed.add((GROUP, USER))
    assert await send(client, bare()) == (200, "ok")
    lead_id = (await only_lead(client))["id"]
    standin.fail("messages.send", 9)  # more than VK lets a community send one person
    queued = await reply(client, lead_id, "Ответ после ошибки 9")

    async def retrying() -> dict[str, Any] | None:
        lead = await lead_json(client, lead_id)
        line = next(m for m in lead["messages"] if m["id"] == queued["message_id"])
        return line if line["status"] == "retrying" else None

    line = await eventually(retrying)
    assert "VK 9: Flood control" in line["status_reason"]
    assert standin.sent == []  # VK's pause is minutes: not tried again within the test


async def test_a_refused_token_halts_sending_and_shows_on_readyz(
    make_client: MakeClient, standin: VkStandIn
) -> None:
    client = await make_client(calendar=open_now(), conversations=FAST)
    standin.allowed.add((GROUP, USER))
    assert await send(client, bare()) == (200, "ok")
    lead_id = (await only_lead(client))["id"]
    standin.revoke(TOKEN)
    queued = await reply(client, lead_id, "Здравствуйте!")

    async def degraded() -> dict[str, Any] | None:
        body: dict[str, Any] = await (await client.get("/readyz")).json()
        return body if len(body["problems"]) >= 2 else None

    body = await degraded_or_fail(degraded)
    text = " ".join(body["problems"])
    assert body["status"] == "degraded"
    assert f"community {GROUP}: the community token is refused" in text
    assert "User authorization failed" in text and TOKEN not in text
    lead = await lead_json(client, lead_id)
    line = next(m for m in lead["messages"] if m["id"] == queued["message_id"])
    assert line["status"] in ("queued", "retrying")  # kept, not given up
    # The token works again (a new key in the community's settings): the probe sends it.
    standin.group_token(TOKEN, GROUP)
    lead = await settled(client, lead_id)
    line = next(m for m in lead["messages"] if m["id"] == queued["message_id"])
    assert line["status"] == "sent"
    assert (await (await client.get("/readyz")).json())["status"] == "ok"


async def degraded_or_fail(check: Any) -> dict[str, Any]:
    found: dict[str, Any] = await eventually(check)
    return found


async def test_a_reply_longer_than_vk_takes_is_refused_before_it_is_queued(
    make_client: MakeClient,
) -> None:
    client = await make_client(calendar=open_now())
    assert await send(client, bare()) == (200, "ok")
    lead_id = (await only_lead(client))["id"]
    resp = await client.post(
        f"/v1/leads/{lead_id}/messages", json={"text": "я" * 9001}, headers=ADMIN_AUTH
    )
    assert resp.status == 422
    assert "9000" in (await resp.json())["fields"]["text"]


async def test_a_community_without_token_still_takes_messages(
    make_client: MakeClient, standin: VkStandIn
) -> None:
    client = await make_client(community(token=None), calendar=open_now())
    assert await send(client, bare()) == (200, "ok")
    lead = await only_lead(client)
    assert lead["contact"]["name"] is None and lead["contact"]["handles"] == [f"vk:{USER}"]
    # A reply cannot go out: sending halts for this community, /readyz says why.
    await reply(client, lead["id"], "Здравствуйте!")

    async def halted() -> dict[str, Any] | None:
        body: dict[str, Any] = await (await client.get("/readyz")).json()
        return body if body["problems"] else None

    body = await degraded_or_fail(halted)
    assert f"no token configured for VK community {GROUP}" in " ".join(body["problems"])
    assert standin.calls == []
