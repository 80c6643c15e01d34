"""Digits that are not ASCII, in every inbound field that carries a number (finding F06).

A phone written with fullwidth (＋７ ９１６…), Arabic-Indic (٩١٦…) or other decimal digits is
the same phone and is read as one wherever a phone is taken; "digits" that are not
decimal (superscripts ⁷⁹¹⁶, circled ①) are not a phone and are refused with a 4xx naming
the field. An id or a list index spelt in such digits is never a 500: str.isdigit() says
yes to "²" and int() then raises (that was the 500 in Bitrix24 Open Lines' form reader,
and an entry retried until dead in VK's and Meta's handlers). Also the token-first order
of the webhooks whose sender is authenticated by a header.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import ADMIN_AUTH, ORDER_AUTH, make_settings

from gateway.web import create_app

Client = TestClient[Any, Any]

DECIMAL = {
    "fullwidth": "＋７ （９１６） １２３-４５-６７",
    "fullwidth trunk 8": "８９１６１２３４５６７",
    "arabic-indic": "+٧ ٩١٦ ١٢٣ ٤٥ ٦٧",
    "extended arabic-indic": "۸۹۱۶۱۲۳۴۵۶۷",
    "devanagari": "+७ ९१६ १२३ ४५ ६७",
    "mixed": "+7 ٩١٦ 123-45-67",
}
NOT_DECIMAL = {"superscript": "+⁷⁹¹⁶¹²³⁴⁵⁶⁷", "circled": "+⑦⑨①⑥①②③④⑤⑥⑦"}


@pytest.fixture
async def client(aiohttp_client: Callable[..., Any], tmp_path: Path) -> Client:
    made: Client = await aiohttp_client(create_app(make_settings(tmp_path)))
    return made


async def phones_of(client: Client, lead_id: str) -> list[str]:
    resp = await client.get(f"/v1/leads/{lead_id}", headers=ADMIN_AUTH)
    assert resp.status == 200
    phones: list[str] = (await resp.json())["contact"]["phones"]
    return phones


async def form_and_order(client: Client, phone: str, order_id: str) -> tuple[Any, Any]:
    """The same phone through a site form and a shop order; both responses."""
    form = await client.post("/v1/forms/site", json={"name": "Анна", "phone": phone})
    order = await client.post(
        "/v1/orders",
        json={"order_id": order_id, "customer": {"name": "Анна", "phone": phone}},
        headers=ORDER_AUTH,
    )
    return form, order


@pytest.mark.parametrize("spelling", DECIMAL)
async def test_decimal_digits_of_any_script_are_the_same_phone(
    client: Client, spelling: str
) -> None:
    form, order = await form_and_order(client, DECIMAL[spelling], "U1")
    assert form.status == 201, await form.text()
    assert order.status == 201, await order.text()
    lead_id = (await form.json())["lead_id"]
    assert (await order.json())["lead_id"] == lead_id  # one person, one lead
    assert await phones_of(client, lead_id) == ["+79161234567"]


@pytest.mark.parametrize("spelling", NOT_DECIMAL)
async def test_digits_that_are_not_decimal_are_refused_by_name(
    client: Client, spelling: str
) -> None:
    form, order = await form_and_order(client, NOT_DECIMAL[spelling], "U2")
    assert form.status == 422
    assert set((await form.json())["fields"]) == {"phone"}
    assert order.status == 422
    assert set((await order.json())["fields"]) == {"customer.phone"}
