"""POST /v1/orders over real HTTP: auth, idempotency (even concurrent), validation, content."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from conftest import ADMIN_AUTH, ORDER_AUTH

from gateway.keys import STORE

Client = TestClient[Any, Any]


def order(order_id: Any = "A-1001", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_id": order_id,
        "customer": {
            "name": "Пётр Смирнов",
            "phone": "+7 916 765-43-21",
            "email": "Petr@Shop.Example",
            "company": "ООО Стройка",
        },
        "items": [
            {"sku": "DR-1", "name": "Дрель", "quantity": 2, "price": "1500.50"},
            {"sku": "LT-9", "name": "Токарный станок", "quantity": 1, "price": 250000},
        ],
        "total": "253001.00",
        "currency": "RUB",
        "comment": "Доставка до склада",
        "utm": {"utm_source": "google"},
    }
    body.update(extra)
    return body


async def leads(client: Client) -> list[dict[str, Any]]:
    resp = await client.get("/v1/leads?limit=500", headers=ADMIN_AUTH)
    assert resp.status == 200
    found: list[dict[str, Any]] = (await resp.json())["leads"]
    return found


async def lead(client: Client, lead_id: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/leads/{lead_id}", headers=ADMIN_AUTH)
    assert resp.status == 200
    found: dict[str, Any] = await resp.json()
    return found


# --- auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Basic b3JkZXJzOnNlY3JldA=="},
        {"Authorization": "Bearer"},
        {"Authorization": "orders-secret-token"},
    ],
)
async def test_missing_or_wrong_token_is_401(client: Client, headers: dict[str, str]) -> None:
    resp = await client.post("/v1/orders", json=order(), headers=headers)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    body = await resp.json()
    assert body["error"] == "unauthorized"
    assert "orders-secret-token" not in orjson.dumps(body).decode()
    assert await leads(client) == []


async def test_admin_token_does_not_open_orders(client: Client) -> None:
    resp = await client.post("/v1/orders", json=order(), headers=ADMIN_AUTH)
    assert resp.status == 401


async def test_token_checked_before_body(client: Client) -> None:
    # Without a token, even a broken body gets 401: strangers learn nothing about parsing.
    resp = await client.post(
        "/v1/orders", data=b"{broken", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 401


# --- created, replayed ------------------------------------------------------------------------


async def test_order_creates_lead(client: Client) -> None:
    resp = await client.post("/v1/orders", json=order(), headers=ORDER_AUTH)
    assert resp.status == 201
    receipt = await resp.json()
    assert receipt["outcome"] == "created"
    found = await lead(client, receipt["lead_id"])
    assert found["status"] == "NEW"
    assert found["channel"] == "orders"
    assert found["source_id"] == "STORE"
    assert found["contact"] == {
        "name": "Пётр Смирнов",
        "phones": ["+79167654321"],
        "emails": ["petr@shop.example"],
        "company": "ООО Стройка",
        "handles": [],
    }
    assert found["assigned_to"] in {"anna", "boris"}
    event = found["events"][0]
    assert event["external_id"] == "site:A-1001"  # scoped by the token that posted it
    assert event["source_detail"] == "site"  # the name of the token that was used
    assert event["utm"] == {"utm_source": "google"}
    assert event["meta"]["order_id"] == "A-1001"


async def test_same_order_twice_is_replayed(client: Client) -> None:
    first = await client.post("/v1/orders", json=order("A-2"), headers=ORDER_AUTH)
    assert first.status == 201
    second = await client.post("/v1/orders", json=order("A-2"), headers=ORDER_AUTH)
    assert second.status == 200
    a, b = await first.json(), await second.json()
    assert b["outcome"] == "replayed"
    assert (b["event_id"], b["lead_id"]) == (a["event_id"], a["lead_id"])
    assert len(await leads(client)) == 1
    assert len((await lead(client, a["lead_id"]))["events"]) == 1


async def test_replay_ignores_changed_body(client: Client) -> None:
    # The order id is the key: a retry with a corrected comment is still the same order.
    first = await (await client.post("/v1/orders", json=order("A-3"), headers=ORDER_AUTH)).json()
    resp = await client.post(
        "/v1/orders", json=order("A-3", comment="другой комментарий"), headers=ORDER_AUTH
    )
    assert resp.status == 200
    assert (await resp.json())["event_id"] == first["event_id"]


async def test_concurrent_same_order_is_one_lead(client: Client) -> None:
    responses = await asyncio.gather(
        *(client.post("/v1/orders", json=order("RACE-1"), headers=ORDER_AUTH) for _ in range(20))
    )
    receipts = [await r.json() for r in responses]
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] * 19 + [201]
    assert sorted(r["outcome"] for r in receipts) == ["created"] + ["replayed"] * 19
    assert len({(r["event_id"], r["lead_id"]) for r in receipts}) == 1
    stored = await leads(client)
    assert len(stored) == 1
    assert stored[0]["id"] == receipts[0]["lead_id"]
    assert len((await lead(client, stored[0]["id"]))["events"]) == 1


async def test_numeric_and_string_order_id_are_the_same_order(client: Client) -> None:
    first = await client.post("/v1/orders", json=order(777), headers=ORDER_AUTH)
    assert first.status == 201
    second = await client.post("/v1/orders", json=order("777"), headers=ORDER_AUTH)
    assert second.status == 200
    assert (await second.json())["event_id"] == (await first.json())["event_id"]


async def test_idempotency_key_replays(client: Client) -> None:
    headers = {**ORDER_AUTH, "Idempotency-Key": "retry-abc"}
    first = await client.post("/v1/orders", json=order("K-1"), headers=headers)
    assert first.status == 201
    # Same key, even with another order id (a client regenerating ids on retry): same receipt.
    second = await client.post("/v1/orders", json=order("K-2"), headers=headers)
    assert second.status == 200
    a, b = await first.json(), await second.json()
    assert b["outcome"] == "replayed"
    assert (b["event_id"], b["lead_id"]) == (a["event_id"], a["lead_id"])
    assert len(await leads(client)) == 1


async def test_idempotency_key_does_not_collide_with_forms(client: Client) -> None:
    headers = {**ORDER_AUTH, "Idempotency-Key": "same-key"}
    order_resp = await client.post("/v1/orders", json=order("K-9"), headers=headers)
    form_resp = await client.post(
        "/v1/forms/site",
        json={"name": "Ира", "phone": "+79031234567"},
        headers={"Idempotency-Key": "same-key"},
    )
    assert order_resp.status == 201
    assert form_resp.status == 201
    assert (await form_resp.json())["event_id"] != (await order_resp.json())["event_id"]


# --- validation -------------------------------------------------------------------------------


async def invalid(client: Client, body: dict[str, Any]) -> dict[str, str]:
    resp = await client.post("/v1/orders", json=body, headers=ORDER_AUTH)
    assert resp.status == 422, await resp.text()
    payload = await resp.json()
    assert payload["error"] == "invalid_fields"
    fields: dict[str, str] = payload["fields"]
    return fields


async def test_missing_order_id_is_422(client: Client) -> None:
    body = order()
    del body["order_id"]
    assert set(await invalid(client, body)) == {"order_id"}
    assert set(await invalid(client, order(""))) == {"order_id"}
    assert set(await invalid(client, order(None))) == {"order_id"}


async def test_customer_without_phone_and_email_is_422(client: Client) -> None:
    fields = await invalid(client, order(customer={"name": "Аноним"}))
    assert set(fields) == {"customer"}
    assert "phone" in fields["customer"] and "email" in fields["customer"]
    assert set(await invalid(client, {"order_id": "X"})) == {"customer"}


async def test_invalid_phone_and_email_are_named(client: Client) -> None:
    fields = await invalid(
        client, order(customer={"name": "Б", "phone": "12345", "email": "nope@"})
    )
    assert set(fields) == {"customer.phone", "customer.email"}


async def test_negative_price_and_bad_items_name_their_path(client: Client) -> None:
    body = order(
        items=[
            {"name": "Ок", "price": 10},
            {"name": "Минус", "price": -5},
            {"name": "", "quantity": 0},
        ],
        total=-1,
    )
    fields = await invalid(client, body)
    assert set(fields) == {"items.1.price", "items.2.name", "items.2.quantity", "total"}


async def test_wrong_types_are_422_not_500(client: Client) -> None:
    fields = await invalid(client, order(customer="Пётр", items="дрель", utm=["x"]))
    assert set(fields) == {"customer", "items", "utm"}
    assert await leads(client) == []


async def test_order_body_errors(client: Client) -> None:
    broken = await client.post(
        "/v1/orders", data=b"{", headers={**ORDER_AUTH, "Content-Type": "application/json"}
    )
    assert broken.status == 400
    not_object = await client.post("/v1/orders", json=[order()], headers=ORDER_AUTH)
    assert not_object.status == 400
    form = await client.post("/v1/orders", data={"order_id": "1"}, headers=ORDER_AUTH)
    assert form.status == 415


# --- what lands in the lead -------------------------------------------------------------------


async def test_unknown_fields_are_accepted_and_kept_in_raw(client: Client) -> None:
    body = order("RAW-1", delivery={"city": "Казань", "slot": "утро"}, loyalty_card="1234")
    body["customer"]["telegram"] = "@petr"
    resp = await client.post("/v1/orders", json=body, headers=ORDER_AUTH)
    assert resp.status == 201
    event_id = (await resp.json())["event_id"]
    stored = await client.app[STORE].get_event(event_id)
    assert stored is not None
    assert stored.raw == body


async def test_items_and_total_land_in_interest_and_text(client: Client) -> None:
    resp = await client.post("/v1/orders", json=order("T-1"), headers=ORDER_AUTH)
    found = await lead(client, (await resp.json())["lead_id"])
    probable = found["interest"]["probable_equipment"]
    assert "Дрель × 2 — 1 500.50 RUB" in probable
    assert "Токарный станок × 1 — 250 000.00 RUB" in probable
    assert "Итого: 253 001.00 RUB" in probable
    text = found["events"][0]["text"]
    assert text.startswith("Заказ №T-1\n")
    assert probable in text
    assert "Комментарий: Доставка до склада" in text


async def test_large_category_wins(client: Client) -> None:
    body = order(
        "CAT-1",
        items=[
            {"name": "Свёрла", "price": 100, "category": "Мелкое"},
            {"name": "Пресс", "price": 900000, "category": "Крупное"},
            {"name": "Ключ", "price": 50, "category": "Мелкое"},
        ],
    )
    resp = await client.post("/v1/orders", json=body, headers=ORDER_AUTH)
    found = await lead(client, (await resp.json())["lead_id"])
    assert found["interest"]["equipment_category"] == "Крупное"

    small = order("CAT-2", customer={"phone": "+79035550000"})
    small["items"] = [{"name": "Свёрла", "category": "Мелкое"}]
    resp = await client.post("/v1/orders", json=small, headers=ORDER_AUTH)
    found = await lead(client, (await resp.json())["lead_id"])
    assert found["interest"]["equipment_category"] == "Мелкое"


async def test_unknown_category_is_422(client: Client) -> None:
    body = order("CAT-3", items=[{"name": "Что-то", "category": "Среднее"}])
    assert set(await invalid(client, body)) == {"items.0.category"}


async def test_shop_clock_far_in_the_past_does_not_split_the_person(client: Client) -> None:
    """A created_at years old must not push the lead out of the dedup window (two leads for
    one person) nor overflow date arithmetic (a 500)."""
    customer = {"name": "Ирина", "phone": "+79035550101"}
    old = await client.post(
        "/v1/orders",
        json={"order_id": "OLD-1", "customer": customer, "created_at": "2020-01-01T12:00:00+03:00"},
        headers=ORDER_AUTH,
    )
    new = await client.post(
        "/v1/orders", json={"order_id": "NEW-1", "customer": customer}, headers=ORDER_AUTH
    )
    assert old.status == new.status == 201
    assert (await new.json())["outcome"] == "merged"
    ancient = await client.post(
        "/v1/orders",
        json={
            "order_id": "Y1",
            "customer": {"phone": "+79035550202"},
            "created_at": "0001-01-01T00:00:00+00:00",
        },
        headers=ORDER_AUTH,
    )
    assert ancient.status == 201
    stored = await lead(client, (await ancient.json())["lead_id"])
    assert stored["events"][0]["meta"]["shop_created_at"].startswith("0001-01-01")


async def test_recent_shop_clock_times_the_event(client: Client) -> None:
    body = {
        "order_id": "Q-1",
        "customer": {"phone": "+79035550303"},
        "created_at": "2026-01-05T12:00:00+03:00",
    }
    resp = await client.post("/v1/orders", json=body, headers=ORDER_AUTH)
    stored = await lead(client, (await resp.json())["lead_id"])
    # Older than a week before receipt: receipt time stands (the test runs after 2026-01-12).
    assert not stored["events"][0]["occurred_at"].startswith("2026-01-05")


async def test_quantities_read_as_numbers_not_exponents(client: Client) -> None:
    body = order(
        "Q-100",
        items=[
            {"name": "Болт М8", "quantity": 100, "price": "12.50"},
            {"name": "Кабель", "quantity": "2.50"},
        ],
    )
    resp = await client.post("/v1/orders", json=body, headers=ORDER_AUTH)
    stored = await lead(client, (await resp.json())["lead_id"])
    assert "Болт М8 × 100 — 12.50 RUB" in stored["interest"]["probable_equipment"]
    assert "Кабель × 2.5" in stored["interest"]["probable_equipment"]
