"""Order ids and Idempotency-Keys are scoped to the token that posted them.

The attack: two senders (two named tokens, say the shop and a marketplace) share one
namespace of order ids, so the marketplace's order 1001 is "replayed" as the shop's
order 1001 — a 200 with someone else's receipt, and the order is silently lost. Orders
stored before the scoping (external_id "1001") still replay for their own token.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from conftest import make_settings

from gateway.web import create_app

Client = TestClient[Any, Any]
SHOP = {"Authorization": "Bearer shop-token-0123456789"}
MARKET = {"Authorization": "Bearer market-token-9876543210"}


def settings(tmp_path: Path) -> Any:
    tokens = {"shop": "shop-token-0123456789", "market": "market-token-9876543210"}
    return make_settings(tmp_path, orders={"tokens": tokens})


def order(order_id: Any, phone: str) -> dict[str, Any]:
    return {"order_id": order_id, "customer": {"phone": phone}, "items": [{"name": "Станок"}]}


async def test_the_same_order_id_from_two_tokens_is_two_orders(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client: Client = await aiohttp_client(create_app(settings(tmp_path)))
    shop = await client.post("/v1/orders", json=order(1001, "+79161234567"), headers=SHOP)
    market = await client.post("/v1/orders", json=order("1001", "+79031234567"), headers=MARKET)
    assert (shop.status, market.status) == (201, 201)
    a, b = await shop.json(), await market.json()
    assert a["event_id"] != b["event_id"] and a["lead_id"] != b["lead_id"]
    # Each token's retry still replays its own order.
    again = await client.post("/v1/orders", json=order("1001", "+79161234567"), headers=SHOP)
    assert again.status == 200 and (await again.json())["event_id"] == a["event_id"]
    again = await client.post("/v1/orders", json=order(1001, "+79031234567"), headers=MARKET)
    assert again.status == 200 and (await again.json())["event_id"] == b["event_id"]


async def test_idempotency_keys_are_per_token(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> None:
    client: Client = await aiohttp_client(create_app(settings(tmp_path)))
    key = {"Idempotency-Key": "retry-7"}
    shop = await client.post("/v1/orders", json=order("S-1", "+79161234567"), headers=SHOP | key)
    market = await client.post(
        "/v1/orders", json=order("M-1", "+79031234567"), headers=MARKET | key
    )
    assert (shop.status, market.status) == (201, 201)
    assert (await shop.json())["event_id"] != (await market.json())["event_id"]
