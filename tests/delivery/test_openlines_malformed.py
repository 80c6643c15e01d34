"""Malformed, partial and odd requests to the Open Lines routes: a clear 4xx, never a 500.

Bitrix24 posts PHP-style forms (`auth[access_token]=...`); anyone can post anything else to
the same URLs, and what a person or a proxy mangles must be named in the answer."""

from __future__ import annotations

from typing import Any

import pytest
from b24_openlines_standin import Bitrix24AppStandIn
from openlines_helpers import Client, gateway, install, portal

__all__ = ["gateway", "portal"]

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def raw_post(client: Client, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    resp = await client.post(path, data=body, headers=FORM)
    assert resp.content_type == "application/json", await resp.text()
    answer: dict[str, Any] = await resp.json()
    return resp.status, answer


# Digits str.isdigit() accepts and int() refuses (superscripts, circled), and digits int()
# reads (fullwidth, Arabic-Indic) that are still not Bitrix24's list indexes.
ODD_INDEXES = ["²", "①", "３", "٣", "¹²"]


@pytest.mark.parametrize("index", ODD_INDEXES)
async def test_unicode_digits_in_field_names_are_not_a_500(
    gateway: Client, portal: Bitrix24AppStandIn, index: str
) -> None:
    assert (await install(portal, gateway))[0] == 200
    token = portal.application_token
    for path, body in [
        ("/v1/openlines/events", f"event=ONIMCONNECTORMESSAGEADD&data[{index}]=x"),
        ("/v1/openlines/events", f"event=ONIMCONNECTORMESSAGEADD&data[MESSAGES][{index}]=x"),
        ("/v1/openlines/install", f"event=ONAPPINSTALL&auth[{index}]=x"),
    ]:
        form = f"{body}&auth[application_token]={token}&auth[member_id]={portal.member_id}"
        status, answer = await raw_post(gateway, path, form.encode())
        assert 400 <= status < 500 or status == 200, (path, body, status, answer)
        assert "error" in answer or answer.get("status") == "ok"


async def test_events_check_the_application_token_before_reading_the_body(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    assert (await install(portal, gateway))[0] == 200
    deep = "event=ONIMCONNECTORMESSAGEADD&data" + "[a]" * 20 + "=1"
    for auth in ("", "&auth[application_token]=" + "x" * 32):
        status, answer = await raw_post(gateway, "/v1/openlines/events", (deep + auth).encode())
        assert status == 401, answer
        assert answer["error"] == "unauthorized"
    good = f"&auth[application_token]={portal.application_token}"
    status, answer = await raw_post(gateway, "/v1/openlines/events", (deep + good).encode())
    assert status == 400
    assert answer["error"] == "invalid_form"
