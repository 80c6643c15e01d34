"""Whose phone is it (finding F01): a VK customer's identity comes from their own words.

A number inside a forwarded message (fwd_messages) or the message answered
(reply_message) is somebody else's; the company's own number, quoted by a customer or
kept in a reply, is never a customer's (`[screen] own_phones`, for every channel). Taken
as identity, either merged unrelated customers into one lead."""

from __future__ import annotations

from typing import Any

from conftest import ADMIN_AUTH
from test_vk_messages import bare, open_now
from vk_support import Client, MakeClient, make_client, send, standin

__all__ = ["make_client", "standin"]

OWN = "+7 (495) 123-45-67"  # the shop's number, as a customer would copy it


def from_customer(user: int, text: str, cmid: int, **msg: Any) -> dict[str, Any]:
    body = bare(text, cmid=cmid, event_id=f"evt-{user}-{cmid}")
    body["object"] = dict(body["object"], from_id=user, peer_id=user, **msg)
    return body


async def leads(client: Client) -> list[dict[str, Any]]:
    resp = await client.get("/v1/leads", headers=ADMIN_AUTH)
    found: list[dict[str, Any]] = (await resp.json())["leads"]
    out = []
    for lead in found:
        resp = await client.get(f"/v1/leads/{lead['id']}", headers=ADMIN_AUTH)
        out.append(await resp.json())
    return sorted(out, key=lambda lead: lead["contact"]["handles"])


async def test_phones_in_forwarded_or_quoted_messages_are_not_the_customers(
    make_client: MakeClient,
) -> None:
    client = await make_client(calendar=open_now())
    quoted = {"text": "Звоните Сергею: 8 916 555-44-33", "from_id": 777}
    assert await send(
        client, from_customer(101, "Вот контакт, подскажите цену", 1, fwd_messages=[quoted])
    ) == (200, "ok")
    assert await send(client, from_customer(102, "А мне тоже цену", 2, reply_message=quoted)) == (
        200,
        "ok",
    )
    first, second = await leads(client)  # two people, two leads
    assert first["contact"]["handles"] == ["vk:101"] and second["contact"]["handles"] == ["vk:102"]
    assert first["contact"]["phones"] == [] and second["contact"]["phones"] == []
    # The seller still reads what was forwarded.
    assert first["messages"][0]["text"].endswith("> Звоните Сергею: 8 916 555-44-33")
    # The customer's own number, in their own words, is theirs.
    assert await send(client, from_customer(101, "Мой номер 8 916 123-45-67", 3)) == (200, "ok")
    first, _ = await leads(client)
    assert first["contact"]["phones"] == ["+79161234567"]


async def test_the_companys_own_number_is_nobodys_identity(make_client: MakeClient) -> None:
    client = await make_client(
        calendar=open_now(), screen={"own_phones": ["84951234567", "+7 800 555-35-35"]}
    )
    for user in (201, 202):
        text = f"Дозвониться не могу на {OWN}, перезвоните"
        assert await send(client, from_customer(user, text, user)) == (200, "ok")
    found = await leads(client)
    assert [lead["contact"]["handles"] for lead in found] == [["vk:201"], ["vk:202"]]
    assert all(lead["contact"]["phones"] == [] for lead in found)
    # Any channel: a form giving the shop's number joins nobody, and keeps no phone.
    for n in (1, 2):
        resp = await client.post("/v1/forms/site", json={"name": f"Гость {n}", "phone": OWN})
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["outcome"] == "created"
    resp = await client.post("/v1/forms/site", json={"name": "Гость", "phone": "8 800 555 35 35"})
    lead_id = (await resp.json())["lead_id"]
    resp = await client.get(f"/v1/leads/{lead_id}", headers=ADMIN_AUTH)
    assert (await resp.json())["contact"]["phones"] == []
