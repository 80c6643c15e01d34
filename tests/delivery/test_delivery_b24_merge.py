"""Merges against the Bitrix24 stand-in: closed CRM leads get a new lead for a new request
(exactly once, even when an answer is lost), call facts read as a seller expects, merges
fill in what the CRM lead lacks, and a form's category and extra fields reach COMMENTS."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp.test_utils import TestClient
from b24_standin import Bitrix24StandIn
from conftest import make_settings
from helpers import ORDER_AUTH, fast_delivery, order, standin, until, until_outbox
from store_view import outbox_of

from gateway.web import create_app

sys.path.insert(0, str(Path(__file__).parent.parent / "connectors"))
from test_telephony_support import (
    load,
    sellers,
    send,
    telephony_config,
    zadarma_request,
)

__all__ = ["standin"]

Client = TestClient[Any, Any]
CATEGORY = {"category_field": "UF_CRM_1706782596", "category_values": {"Крупное": "45"}}


async def app(
    aiohttp_client: Callable[..., Any], tmp_path: Path, url: str, **bitrix: Any
) -> Client:
    settings = make_settings(
        tmp_path,
        delivery=fast_delivery(url, **bitrix),
        telephony=telephony_config(),
        sellers=sellers(),
    )
    client: Client = await aiohttp_client(create_app(settings))
    return client


def delivered(tmp_path: Path) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        rows = await outbox_of(tmp_path / "leadgate.db")
        return bool(rows) and all(r.state == "delivered" for r in rows)

    return check


async def post_order(client: Client, n: int, tel: str = "+7 916 123-45-67") -> dict[str, Any]:
    resp = await client.post("/v1/orders", json=order(n, tel), headers=ORDER_AUTH)
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def call(client: Client, fixture: str, upto: int | None = None) -> None:
    for req in load(fixture)["requests"][:upto]:
        status, body = await send(client, "zadarma", req)
        assert status == 200, body


async def missed_call_now(client: Client, caller: str = "79161234567") -> None:
    """A missed call that starts now (the recorded ones are too old to merge with)."""
    now = datetime.now(ZoneInfo("Europe/Moscow")).strftime("%Y-%m-%d %H:%M:%S")
    base = {"call_start": now, "pbx_call_id": "in_now", "caller_id": caller,
            "called_did": "74951234567"}  # fmt: skip
    end = {"event": "NOTIFY_END", **base, "disposition": "no answer", "duration": "0"}
    for form in ({"event": "NOTIFY_START", **base}, end):
        status, body = await send(client, "zadarma", zadarma_request(form))
        assert status == 200, body


def with_marker(standin: Bitrix24StandIn, event_id: str) -> list[int]:
    """CRM leads that hold a comment for this event."""
    return sorted(
        {
            int(c["ENTITY_ID"])
            for c in standin.comments.values()
            if f"leadgate:{event_id}" in str(c["COMMENT"])
        }
    )


# --- 1. a closed CRM lead: a new request is a new CRM lead ------------------------------------


async def test_request_on_a_closed_crm_lead_makes_a_new_one(
    aiohttp_client: Callable[..., Any], tmp_path: Path, standin: Bitrix24StandIn
) -> None:
    client = await app(aiohttp_client, tmp_path, standin.webhook_url)
    first = await post_order(client, 1)
    await until(delivered(tmp_path))
    (crm_id,) = standin.leads
    # The seller converted the lead into a deal, with contact 77.
    standin.set_status(crm_id, "CONVERTED")
    standin.leads[crm_id]["CONTACT_ID"] = "77"

    second = await post_order(client, 2)
    assert second["outcome"] == "merged" and second["lead_id"] == first["lead_id"]
    await until(delivered(tmp_path))
    assert with_marker(standin, second["event_id"]) == []  # not buried on the closed lead
    origin = f"{first['lead_id']}:{second['event_id']}"
    (new_id,) = standin.by_origin()[origin]
    new = standin.leads[new_id]
    assert new["STATUS_ID"] == "NEW" and new["STATUS_SEMANTIC_ID"] == "P"
    assert new["ORIGINATOR_ID"] == "leadgate"
    assert new["TITLE"] == "Заказ №A-2"
    assert new["CONTACT_ID"] == "77"  # the customer the closed lead was converted into
    assert new["ASSIGNED_BY_ID"] == standin.leads[crm_id]["ASSIGNED_BY_ID"]
    assert new["COMMENTS"].startswith(f"Повторное обращение: предыдущий лид №{crm_id}")
    assert f"leadgate:{second['event_id']}" in new["COMMENTS"]
    assert (await outbox_of(tmp_path / "leadgate.db"))[-1].remote_id == str(new_id)

    # Later contacts go to the new, open CRM lead.
    third = await post_order(client, 3)
    await until(delivered(tmp_path))
    assert with_marker(standin, third["event_id"]) == [new_id]
    assert len(standin.leads) == 2

    # That one is lost too (junk: semantic F): the next request is a third CRM lead.
    standin.set_status(new_id, "JUNK")
    fourth = await post_order(client, 4)
    await until(delivered(tmp_path))
    (newest,) = standin.by_origin()[f"{first['lead_id']}:{fourth['event_id']}"]
    assert f"№{new_id} закрыт как некачественный" in standin.leads[newest]["COMMENTS"]
    assert len(standin.leads) == 3 and with_marker(standin, fourth["event_id"]) == []


async def test_lost_answer_never_makes_a_second_repeat_lead(
    aiohttp_client: Callable[..., Any], tmp_path: Path, standin: Bitrix24StandIn
) -> None:
    client = await app(aiohttp_client, tmp_path, standin.webhook_url)
    first = await post_order(client, 1)
    await until(delivered(tmp_path))
    (crm_id,) = standin.leads
    standin.set_status(crm_id, "CONVERTED")
    # Bitrix24 makes the new lead, then the answer is lost (500 after the work).
    standin.fail(1, when="after", command="crm.lead.add")
    second = await post_order(client, 2)
    await until(delivered(tmp_path))
    assert standin.count(500) == 1
    assert len(standin.by_origin()[f"{first['lead_id']}:{second['event_id']}"]) == 1
    assert len(standin.leads) == 2
    rows = await outbox_of(tmp_path / "leadgate.db")
    assert [r.attempts for r in rows] == [1, 2]


async def test_two_requests_in_one_batch_make_one_new_lead(
    aiohttp_client: Callable[..., Any], tmp_path: Path, standin: Bitrix24StandIn
) -> None:
    client = await app(aiohttp_client, tmp_path, standin.webhook_url)
    first = await post_order(client, 1)
    await until(delivered(tmp_path))
    (crm_id,) = standin.leads
    standin.set_status(crm_id, "JUNK")
    standin.revoke()  # hold delivery back so both merges meet in one batch
    second = await post_order(client, 2)
    third = await post_order(client, 3)
    await until(lambda: standin.count(401) >= 1)
    standin.revoke(None)
    await until(delivered(tmp_path), within=15)
    rows = await outbox_of(tmp_path / "leadgate.db")
    assert rows[1].delivered_at == rows[2].delivered_at  # one batch indeed
    (new_id,) = standin.by_origin()[f"{first['lead_id']}:{second['event_id']}"]
    assert len(standin.leads) == 2
    assert with_marker(standin, third["event_id"]) == [new_id]


# --- 2. calls ----------------------------------------------------------------------------------


async def test_call_outcomes_read_as_a_seller_expects(
    aiohttp_client: Callable[..., Any], tmp_path: Path, standin: Bitrix24StandIn
) -> None:
    client = await app(aiohttp_client, tmp_path, standin.webhook_url)
    await call(client, "zadarma_busy")
    await call(client, "zadarma_answered")
    await until(delivered(tmp_path))
    await until(lambda: len(standin.comments) == 4)
    (crm_id,) = standin.leads
    firsts = [c.splitlines()[0] for c in standin.comments_on(crm_id)]
    assert firsts[0].startswith("Пропущенный звонок: занято. Перезвонить до ")
    assert firsts[1].startswith("Повторное обращение: Телефон, ")
    assert firsts[2] == "Разговор 1 мин 35 с, ответил(а) Анна"
    assert firsts[3].startswith("Запись разговора: https://")
    assert all(c.splitlines()[-1].startswith("leadgate:") for c in standin.comments_on(crm_id))


async def test_call_facts_follow_the_call_onto_a_closed_lead(
    aiohttp_client: Callable[..., Any], tmp_path: Path, standin: Bitrix24StandIn
) -> None:
    client = await app(aiohttp_client, tmp_path, standin.webhook_url)
    await call(client, "zadarma_busy", upto=2)  # the call: a lead
    await until(delivered(tmp_path))
    (crm_id,) = standin.leads
    standin.set_status(crm_id, "JUNK")
    await call(client, "zadarma_busy")  # ...and how it ended: a fact, never a new lead
    await until_outbox(tmp_path / "leadgate.db", lambda rows: len(rows) == 2)
    await until(delivered(tmp_path))
    assert list(standin.leads) == [crm_id]
    assert standin.comments_on(crm_id)[0].startswith("Пропущенный звонок: занято")


# --- 3. merges fill in what the CRM lead lacks -----------------------------------------------


async def test_merge_fills_empty_fields_and_adds_contacts(
    aiohttp_client: Callable[..., Any], tmp_path: Path, standin: Bitrix24StandIn
) -> None:
    client = await app(aiohttp_client, tmp_path, standin.webhook_url, **CATEGORY)
    await missed_call_now(client)  # a lead with a phone and nothing else
    await until(delivered(tmp_path))
    (crm_id,) = standin.leads
    form = {
        "name": "Иван Петров",
        "phone": "+7 916 123-45-67",
        "email": "ivan@example.ru",
        "equipment_type": "Крупное",
        "comment": "Нужен пресс",
    }
    resp = await client.post("/v1/forms/site", json=form)
    assert (await resp.json())["outcome"] == "merged"
    await until(delivered(tmp_path))
    lead = standin.leads[crm_id]
    assert (lead["NAME"], lead["LAST_NAME"]) == ("Иван", "Петров")
    assert [m["VALUE"] for m in lead["PHONE"]] == ["+79161234567"]  # not added twice
    assert [m["VALUE"] for m in lead["EMAIL"]] == ["ivan@example.ru"]
    assert lead["UF_CRM_1706782596"] == "45"
    comment = standin.comments_on(crm_id)[-1]
    assert "Интерес: Крупное" in comment and "Нужен пресс" in comment

    # The seller corrects the name; a later form neither overwrites it nor drops its email.
    lead["NAME"], lead["LAST_NAME"] = "Иоанн", "Петров-Водкин"
    form.update(name="Ваня", email="petrov@example.ru")
    await client.post("/v1/forms/site", json=form)
    await until(lambda: len(standin.comments_on(crm_id)) == 3)
    await until(delivered(tmp_path))
    assert (lead["NAME"], lead["LAST_NAME"]) == ("Иоанн", "Петров-Водкин")
    assert [m["VALUE"] for m in lead["EMAIL"]] == ["ivan@example.ru", "petrov@example.ru"]


# --- 4. default settings keep the form's category and extra fields ---------------------------


async def test_form_category_and_extra_fields_reach_comments_by_default(
    aiohttp_client: Callable[..., Any], tmp_path: Path, standin: Bitrix24StandIn
) -> None:
    client = await app(aiohttp_client, tmp_path, standin.webhook_url)
    form = {
        "name": "ООО Ромашка",
        "phone": "+7 916 765-43-21",
        "equipment_type": "Мелкое",
        "city": "Тула",
    }
    resp = await client.post("/v1/forms/site", json=form)
    assert resp.status == 201, await resp.text()
    await until(delivered(tmp_path))
    (lead,) = standin.leads.values()
    assert "Категория оборудования: Мелкое" in lead["COMMENTS"]
    assert "city: Тула" in lead["COMMENTS"]
    assert lead["COMPANY_TITLE"] == "ООО Ромашка" and not lead.get("NAME")
