"""Malformed, partial and odd requests to the Open Lines routes: a clear 4xx, never a 500.

Bitrix24 posts PHP-style forms (`auth[access_token]=...`); anyone can post anything else to
the same URLs, and what a person or a proxy mangles must be named in the answer."""

from __future__ import annotations

from typing import Any

import pytest
from b24_openlines_standin import Bitrix24AppStandIn
from openlines_helpers import Client, app_client_of, gateway, install, portal

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


# Installation requests a person, a proxy or a prober can make of the install URL: each
# must get a 4xx naming the problem (or the 401 of a token the portal did not vouch for).
ODD_INSTALLS: list[tuple[str, dict[str, Any]]] = [
    ("endpoint not a URL", {"client_endpoint": "http://[::1/rest/"}),
    ("endpoint port out of range", {"client_endpoint": "http://127.0.0.1:99999/rest/"}),
    ("endpoint port not a number", {"client_endpoint": "http://127.0.0.1:8o/rest/"}),
    ("endpoint with a control character", {"client_endpoint": "https://por\ntal/rest/"}),
    ("endpoint IDNA junk", {"client_endpoint": "https://xn--/rest/"}),
    ("server endpoint not a URL", {"server_endpoint": "https://[oauth/rest/"}),
    ("expires not a number", {"expires": "soon", "expires_in": "a while"}),
    ("expires absurd", {"expires": "1e400", "expires_in": "-5"}),
    ("token with a newline", {"access_token": "abc\r\nX-Injected: 1"}),
    ("token not text", {"access_token": {"a": "b"}}),
    ("member id huge", {"member_id": "m" * 5000}),
]


@pytest.mark.parametrize("case", [c for c, _ in ODD_INSTALLS])
async def test_odd_installation_requests_get_a_clear_4xx(
    gateway: Client, portal: Bitrix24AppStandIn, case: str
) -> None:
    auth = dict(ODD_INSTALLS)[case]
    status, body = await install(portal, gateway, **auth)
    assert 400 <= status < 500 or status == 200, (case, status, body)
    assert isinstance(body, dict) and ("error" in body or body.get("status") == "installed")
    if status >= 400:
        assert body["detail"], body


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"event=ONAPPINSTALL",
        b"event=ONAPPINSTALL&auth=plain-text",
        b"event[]=ONAPPINSTALL&auth[access_token]=x",
        b"event=ONAPPINSTALL&auth[0]=a&auth[1]=b",
        b"event=ONAPPINSTALL&auth[access_token][]=x&auth[refresh_token]=y",
        b"event=%FF%FE&auth[access_token]=%C0%AF",
        b"event=ONAPPINSTALL&" + b"&".join(b"k%d=v" % i for i in range(2500)),
    ],
)
async def test_partial_installation_bodies_get_a_clear_4xx(gateway: Client, body: bytes) -> None:
    status, answer = await raw_post(gateway, "/v1/openlines/install", body)
    assert 400 <= status < 500, (status, answer)
    assert answer["error"] and answer["detail"]


async def test_an_installation_naming_no_usable_auth_server_renews_at_ours(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    status, body = await install(portal, gateway, server_endpoint="https://[oauth/rest/")
    assert status == 200, body
    portal.expire_access()
    client = app_client_of(gateway)
    assert (await client.call("app.info"))["CODE"] == portal.client_id
    assert portal.app.refreshes == 1
