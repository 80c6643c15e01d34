"""Answers to Messenger and Instagram customers through the Send API stand-in: a seller's
reply and the after-hours answer within 24 h, HUMAN_AGENT after that, 7 days after an ad,
«окно ответа закрыто» beyond, and Meta's refusals (551, 10/2018278, 190, rate limits)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from conftest import ADMIN_AUTH
from meta_standin import MetaGraphStandIn
from meta_support import (
    IG_ID,
    IG_TOKEN,
    PAGE_ID,
    PAGE_TOKEN,
    PSID,
    Client,
    MakeClient,
    as_meta_sends,
    drained,
    envelope,
    eventually,
    graph,  # noqa: F401  (a fixture)
    leads,
    make_client,  # noqa: F401  (a fixture)
    metric,
    post,
    text_body,
)

from gateway.hours import DAYS

MOSCOW = ZoneInfo("Europe/Moscow")
DAY_MS = 24 * 3600 * 1000


def open_now() -> dict[str, Any]:
    today = datetime.now(MOSCOW).date()
    week = {day: ["00:00-24:00"] for day in DAYS}
    return {"channels": {"facebook": week, "instagram": week}, "extra_workdays": [str(today)]}


def closed_now() -> dict[str, Any]:
    """Facebook opens only on the weekday after tomorrow, 10:00-11:00: closed now."""
    later = datetime.now(MOSCOW) + timedelta(days=2)
    return {"channels": {"facebook": {DAYS[later.weekday()]: ["10:00-11:00"]}}}


def now_ms(days_ago: float = 0) -> int:
    return int((time.time() - days_ago * 86400) * 1000)


async def customer_writes(
    client: Client,
    graph: MetaGraphStandIn,  # noqa: F811
    *,
    days_ago: float = 0,
    via_ad: bool = False,
    person: str = PSID,
) -> str:
    """The customer writes (`days_ago`), Meta and we both know it; returns the lead id."""
    at = now_ms(days_ago)
    graph.person(person, {"first_name": "Иван"}, account=PAGE_ID, wrote_at=at / 1000, via_ad=via_ad)
    items: list[dict[str, Any]] = []
    if via_ad:
        items.append(
            {
                "sender": {"id": person},
                "recipient": {"id": PAGE_ID},
                "timestamp": at - 1000,
                "referral": {
                    "ref": "lifts",
                    "ad_id": "120210000000000017",
                    "source": "ADS",
                    "type": "OPEN_THREAD",
                    "ads_context_data": {"ad_title": "Подъёмники"},
                },
            }
        )
    items.append(
        {
            "sender": {"id": person},
            "recipient": {"id": PAGE_ID},
            "timestamp": at,
            "message": {"mid": f"m_{person}_{at}", "text": "Сколько стоит подъёмник?"},
        }
    )
    assert (await post(client, as_meta_sends(envelope("page", PAGE_ID, *items)))).status == 200
    await drained(client)
    (lead,) = [x for x in await leads(client) if f"fb:{person}" in x.contact.handles]
    return lead.id


async def reply(client: Client, lead_id: str, text: str = "Здравствуйте! 450 000 ₽.") -> Any:
    return await client.post(
        f"/v1/leads/{lead_id}/messages", json={"text": text}, headers=ADMIN_AUTH
    )


async def settled_line(client: Client, lead_id: str, message_id: str) -> dict[str, Any]:
    """The outbound line once its status is final."""

    async def final() -> dict[str, Any] | None:
        shown = await (await client.get(f"/v1/leads/{lead_id}", headers=ADMIN_AUTH)).json()
        (line,) = [m for m in shown["messages"] if m["id"] == message_id]
        return line if line["status"] in ("sent", "undeliverable", "unconfirmed") else None

    found: dict[str, Any] = await eventually(final, what="message settled")
    return found


async def answered(client: Client, lead_id: str, text: str = "Здравствуйте! 450 000 ₽.") -> Any:
    resp = await reply(client, lead_id, text)
    assert resp.status == 202, await resp.text()
    return await settled_line(client, lead_id, (await resp.json())["message_id"])


# --- within the window ----------------------------------------------------------------------


async def test_a_sellers_reply_goes_with_the_send_api(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    client = await make_client(calendar=open_now())
    lead_id = await customer_writes(client, graph)
    line = await answered(client, lead_id)
    assert line["status"] == "sent"
    (sent,) = graph.sent
    assert (sent.account, sent.recipient) == (PAGE_ID, PSID)
    assert sent.body == {
        "recipient": {"id": PSID},
        "messaging_type": "RESPONSE",
        "message": {"text": "Здравствуйте! 450 000 ₽."},
    }
    assert line["external_id"] == sent.message_id
    assert (
        metric(
            client, "leadgate_messages_total", channel="facebook", account=PAGE_ID, result="sent"
        )
        == 1
    )


async def test_the_after_hours_answer_goes_once(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    client = await make_client(calendar=closed_now())
    lead_id = await customer_writes(client, graph)
    await customer_writes(client, graph)  # writes again in the same closed period

    async def answer() -> bool:
        return len(graph.sent) >= 1

    await eventually(answer, what="the after-hours answer")
    shown = await (await client.get(f"/v1/leads/{lead_id}", headers=ADMIN_AUTH)).json()
    (auto,) = [m for m in shown["messages"] if m["author"] == "auto"]
    (sent,) = graph.sent
    assert sent.body["messaging_type"] == "RESPONSE"
    assert sent.text == auto["text"] and "нерабочее время" in auto["text"]


# --- the window -------------------------------------------------------------------------------


async def test_after_24_hours_a_person_answers_with_human_agent(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    client = await make_client(calendar=open_now())
    lead_id = await customer_writes(client, graph, days_ago=2)
    line = await answered(client, lead_id)
    assert line["status"] == "sent"
    (sent,) = graph.sent
    assert (sent.body["messaging_type"], sent.body["tag"]) == ("MESSAGE_TAG", "HUMAN_AGENT")


async def test_after_the_window_the_reply_ends_window_closed(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    client = await make_client(calendar=open_now())
    lead_id = await customer_writes(client, graph, days_ago=8)
    line = await answered(client, lead_id)
    assert (line["status"], line["status_reason"]) == ("undeliverable", "окно ответа закрыто")
    assert graph.sent == [] and graph.count("POST") == 0  # not even tried


async def test_without_a_tag_two_days_is_too_late(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    client = await make_client(calendar=open_now(), meta={"reply_tag": ""})
    lead_id = await customer_writes(client, graph, days_ago=2)
    line = await answered(client, lead_id)
    assert (line["status"], line["status_reason"]) == ("undeliverable", "окно ответа закрыто")


async def test_seven_days_after_an_ad_click(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    client = await make_client(calendar=open_now(), meta={"reply_tag": ""})
    lead_id = await customer_writes(client, graph, days_ago=3, via_ad=True)
    events = (await (await client.get(f"/v1/leads/{lead_id}", headers=ADMIN_AUTH)).json())["events"]
    assert events[0]["source_detail"] == "ad 120210000000000017"
    line = await answered(client, lead_id)
    assert line["status"] == "sent"
    (sent,) = graph.sent
    assert sent.body["messaging_type"] == "RESPONSE" and "tag" not in sent.body


async def test_when_meta_says_the_window_is_closed(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    # Our rules think 3 days is fine (window_hours=72); Meta's 24 h say otherwise.
    client = await make_client(calendar=open_now(), meta={"window_hours": 72, "reply_tag": ""})
    lead_id = await customer_writes(client, graph, days_ago=2)
    line = await answered(client, lead_id)
    assert line["status"] == "undeliverable"
    assert line["status_reason"].startswith("окно ответа закрыто (10/2018278")


# --- Meta's refusals ------------------------------------------------------------------------


async def test_a_person_who_is_not_available(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    client = await make_client(calendar=open_now())
    lead_id = await customer_writes(client, graph)
    graph.unavailable.add(PSID)
    line = await answered(client, lead_id)
    assert line["status"] == "undeliverable"
    assert line["status_reason"] == "551/1545041: (#551) This person isn't available right now."


async def test_a_refused_token_halts_the_page_until_it_works(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    client = await make_client(calendar=open_now())
    lead_id = await customer_writes(client, graph)
    graph.revoke(PAGE_TOKEN)
    resp = await reply(client, lead_id)
    message_id = (await resp.json())["message_id"]

    async def halted() -> list[str] | None:
        ready = await (await client.get("/readyz")).json()
        found = [p for p in ready["problems"] if "credentials refused" in p]
        return found or None

    (problem,) = await eventually(halted, what="sending halted")
    # /readyz is masked like a log: a page id is as long as a phone (last digits shown).
    assert "facebook/" in problem and PAGE_ID[-4:] in problem and PAGE_TOKEN not in problem
    assert metric(client, "leadgate_messages_halted", channel="facebook", account=PAGE_ID) == 1
    graph.revoked.clear()
    line = await settled_line(client, lead_id, message_id)
    assert line["status"] == "sent" and len(graph.sent) == 1


async def test_a_permission_refusal_halts_that_page_only_and_says_so(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    """(#10) for a Page token without a tag: not retried as a passing failure (no attempt is
    used, nothing goes to the dead letters); sending stops for that Page, /readyz names it,
    and a probe resumes it once Meta allows it again."""
    client = await make_client(calendar=open_now())
    lead_id = await customer_writes(client, graph)
    graph.fail("permission", method="POST", times=3)
    resp = await reply(client, lead_id)
    message_id = (await resp.json())["message_id"]

    async def halted() -> list[str] | None:
        ready = await (await client.get("/readyz")).json()
        return [p for p in ready["problems"] if "facebook/" in p] or None

    (problem,) = await eventually(halted, what="sending halted")
    assert "(#10)" in problem
    assert metric(client, "leadgate_messages_halted", channel="facebook", account=PAGE_ID) == 1
    line = await settled_line(client, lead_id, message_id)
    assert line["status"] == "sent"
    assert graph.count("POST") == 4  # three refused probes, then sent: one message
    assert (
        metric(
            client, "leadgate_messages_total", result="retry", channel="facebook", account=PAGE_ID
        )
        == 0
    )
    assert metric(client, "leadgate_messages_halted", channel="facebook", account=PAGE_ID) == 0


async def test_rate_limits_are_retried(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    client = await make_client(calendar=open_now(), meta={"rate_limit_seconds": 0.05})
    lead_id = await customer_writes(client, graph)
    graph.fail("page_rate", method="POST")
    graph.fail("call_rate", method="POST")
    line = await answered(client, lead_id)
    assert line["status"] == "sent"
    assert graph.count("POST") == 3 and len(graph.sent) == 1
    labels = {"account": PAGE_ID, "call": "send"}
    assert metric(client, "leadgate_meta_graph_errors_total", code="613", **labels) == 1


# --- Instagram ------------------------------------------------------------------------------


async def test_instagram_login_replies_and_its_limit(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    igsid = "6412849022070011"
    graph.person(igsid, {"username": "ivan"}, account=IG_ID, instagram=True)
    client = await make_client(calendar=open_now())
    item = {
        "sender": {"id": igsid},
        "recipient": {"id": IG_ID},
        "timestamp": now_ms(),
        "message": {"mid": "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQx", "text": "Привет"},
    }
    assert (await post(client, as_meta_sends(envelope("instagram", IG_ID, item)))).status == 200
    await drained(client)
    (lead,) = await leads(client)
    too_long = await reply(client, lead.id, "я" * 501)
    assert too_long.status == 422
    assert "500" in (await too_long.json())["fields"]["text"]
    # 300 emoji are 300 characters but 1200 bytes: more than Instagram takes.
    line = await answered(client, lead.id, "\U0001f600" * 300)
    assert line["status"] == "undeliverable" and "1000 байт" in line["status_reason"]
    line = await answered(client, lead.id, "Здравствуйте!")
    assert line["status"] == "sent"
    (sent,) = graph.sent
    assert sent.account == IG_ID and sent.recipient == igsid
    (call,) = [c for c in graph.calls if c.method == "POST"]
    assert call.path == f"{IG_ID}/messages"
    assert IG_TOKEN not in str(call)


async def test_messenger_takes_2000_characters(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    client = await make_client(calendar=open_now())
    lead_id = await customer_writes(client, graph)
    assert (await reply(client, lead_id, "я" * 2001)).status == 422
    line = await answered(client, lead_id, "я" * 2000)
    assert line["status"] == "sent"


async def test_a_phone_typed_in_chat_is_the_customers_phone(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    client = await make_client(calendar=open_now())
    body = text_body("m_phone", "Перезвоните мне: 8 916 123-45-67", at_ms=now_ms())
    assert (await post(client, body)).status == 200
    await drained(client)
    (lead,) = await leads(client)
    assert lead.contact.phones == ("+79161234567",)


# --- no answer ------------------------------------------------------------------------------


async def test_a_send_that_got_no_answer_is_not_repeated_but_shown_unconfirmed(
    make_client: MakeClient,  # noqa: F811
    graph: MetaGraphStandIn,  # noqa: F811
) -> None:
    """Meta took the message and the connection dropped before its answer: the Send API has
    no idempotency key, so sending again could give the customer the reply twice."""
    client = await make_client(calendar=open_now())
    lead_id = await customer_writes(client, graph)
    graph.lose_answers()
    line = await answered(client, lead_id)
    assert line["status"] == "unconfirmed"
    assert "no answer after sending" in line["status_reason"]
    assert len(graph.sent) == 1 and graph.count("POST") == 1  # once, not again
    labels = {"channel": "facebook", "account": PAGE_ID}
    assert metric(client, "leadgate_messages_total", result="unconfirmed", **labels) == 1
    # A refused connection proves nothing left: that one is retried (and then sent).
    await graph.stop()
    resp = await reply(client, lead_id, "Вы здесь?")
    assert resp.status == 202
    queued = (await resp.json())["message_id"]

    async def retried() -> bool:
        return metric(client, "leadgate_messages_total", result="retry", **labels) >= 1

    await eventually(retried, what="a retry of the refused connection")
    port = int(graph.url.rsplit(":", 1)[1])
    await graph.start(port=port)
    assert (await settled_line(client, lead_id, queued))["status"] == "sent"
    assert [s.body["message"]["text"] for s in graph.sent] == [
        "Здравствуйте! 450 000 ₽.",
        "Вы здесь?",
    ]
