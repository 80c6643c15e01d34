"""leadgate as a Bitrix24 local application: installation, events verified, readiness."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from b24_openlines_standin import Bitrix24AppStandIn
from openlines_helpers import (
    Client,
    gateway,
    install,
    keeper_of,
    ol_settings,
    portal,
    post_event,
)

from gateway.config import ConfigError
from gateway.delivery.openlines.tokens import REVOKED, TOKENS, AppState, AppTokens
from gateway.keys import STORE
from gateway.web import create_app

__all__ = ["gateway", "portal"]

MESSAGE = {
    "CONNECTOR": "leadgate",
    "LINE": "1",
    "MESSAGES": [
        {
            "im": {"chat_id": "1807", "message_id": "86497"},
            "message": {"user_id": "27", "text": "[b]Анна:[/b] [br]Здравствуйте!"},
            "chat": {"id": "01J0000000000000000000000"},
        }
    ],
}


async def readyz(client: Client) -> dict[str, Any]:
    resp = await client.get("/readyz")
    body: dict[str, Any] = await resp.json()
    return body


async def stored_tokens(client: Client) -> AppTokens | None:
    raw = await client.app[STORE].get_checkpoint(TOKENS)
    return AppTokens.loads(raw) if raw else None


async def test_not_installed_is_a_readiness_problem(gateway: Client) -> None:
    body = await readyz(gateway)
    assert any(
        p.startswith("openlines: the local application is not installed") for p in body["problems"]
    ), body
    assert "/v1/openlines/install" in str(body["problems"])


async def test_install_keeps_the_tokens_durably(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    status, body = await install(portal, gateway)
    assert status == 200, body
    assert body == {"status": "installed"}
    tokens = await stored_tokens(gateway)
    assert tokens is not None
    assert tokens.member_id == portal.member_id
    assert tokens.application_token == portal.application_token
    assert portal.app.refresh[tokens.refresh_token] is True  # the live one
    assert tokens.client_endpoint == portal.rest_base
    assert keeper_of(gateway).state is AppState.READY
    assert not [p for p in (await readyz(gateway))["problems"] if p.startswith("openlines")]
    # The portal was asked, with the token it sent, whose application this is.
    assert portal.app_calls == ["app.info"]


async def test_install_with_a_token_the_portal_refuses_is_forbidden(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    status, body = await install(portal, gateway, access_token="0" * 32)
    assert status == 401
    assert body["error"] == "unauthorized"
    assert await stored_tokens(gateway) is None


async def test_install_of_another_application_is_forbidden(
    aiohttp_client: Callable[..., Any], tmp_path: Path, portal: Bitrix24AppStandIn
) -> None:
    settings = ol_settings(tmp_path, portal)
    client: Client = await aiohttp_client(create_app(settings))
    portal.client_id = "local.0000000000000a.00000001"  # app.info names another app
    status, body = await install(portal, client)
    assert status == 401
    assert "another application" in body["detail"]
    assert await stored_tokens(client) is None


async def test_install_for_another_portal_is_forbidden(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    status, body = await install(portal, gateway, client_endpoint="https://evil.example/rest/")
    assert status == 401
    assert body["error"] == "wrong_portal"
    assert portal.app_calls == []  # the foreign endpoint was never called


async def test_install_lacking_fields_or_not_an_installation(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    status, body = await install(portal, gateway, refresh_token="")
    assert status == 400
    assert body["fields"] == {"refresh_token": "required"}
    url = str(gateway.make_url("/v1/openlines/install"))
    status, body = await portal.post(url, b"AUTH_ID=abc&REFRESH_ID=def&member_id=x")
    assert status == 400
    assert body["error"] == "not_an_installation"
    resp = await gateway.post("/v1/openlines/install", json={"event": "ONAPPINSTALL"})
    assert resp.status == 415


async def test_install_while_the_portal_is_down_asks_to_retry(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    portal.fail(status=500, error="INTERNAL_SERVER_ERROR", command="app.info")
    status, body = await install(portal, gateway)
    assert status == 503
    assert body["error"] == "portal_unavailable"
    assert await stored_tokens(gateway) is None


async def test_pinned_application_token_must_match(
    aiohttp_client: Callable[..., Any], tmp_path: Path, portal: Bitrix24AppStandIn
) -> None:
    settings = ol_settings(tmp_path, portal, application_token="a-different-token-0001")
    client: Client = await aiohttp_client(create_app(settings))
    status, _ = await install(portal, client)
    assert status == 401
    assert await stored_tokens(client) is None


async def test_events_need_the_installation_application_token(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    # Before installation nothing is believed.
    status, body = await post_event(portal, gateway, "ONIMCONNECTORMESSAGEADD", MESSAGE)
    assert status == 401
    assert body["error"] == "not_installed"
    assert (await install(portal, gateway))[0] == 200
    status, body = await post_event(
        portal, gateway, "ONIMCONNECTORMESSAGEADD", MESSAGE, application_token="x" * 32
    )
    assert status == 401
    assert body["detail"] == "wrong auth[application_token]"
    status, body = await post_event(
        portal, gateway, "ONIMCONNECTORMESSAGEADD", MESSAGE, application_token=""
    )
    assert status == 401
    status, body = await post_event(
        portal, gateway, "ONIMCONNECTORMESSAGEADD", MESSAGE, member_id="f" * 32
    )
    assert status == 401
    assert "another portal" in body["detail"]
    status, body = await post_event(portal, gateway, "ONIMCONNECTORMESSAGEADD", MESSAGE)
    assert status == 200, body


async def test_event_bodies_that_are_not_bitrix24_forms_are_refused(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    assert (await install(portal, gateway))[0] == 200
    resp = await gateway.post("/v1/openlines/events", json={"event": "X"})
    assert resp.status == 415
    deep = "data" + "[a]" * 20 + "=1" + f"&auth[application_token]={portal.application_token}"
    resp = await gateway.post(
        "/v1/openlines/events",
        data=deep.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_form"


async def test_uninstall_stops_with_a_readiness_problem_until_reinstalled(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    assert (await install(portal, gateway))[0] == 200
    status, _ = await post_event(portal, gateway, "ONAPPUNINSTALL", {"LANGUAGE_ID": "ru"})
    assert status == 200
    assert keeper_of(gateway).state is AppState.REVOKED
    problems = (await readyz(gateway))["problems"]
    assert any("removed from the portal" in p and "reinstall" in p for p in problems), problems
    assert await gateway.app[STORE].get_checkpoint(REVOKED) is not None
    metrics = await (await gateway.get("/metrics")).text()
    assert "leadgate_openlines_halted 1.0" in metrics
    # Installing again is a new set of tokens: the refusal was about the old ones.
    assert (await install(portal, gateway))[0] == 200
    assert keeper_of(gateway).state is AppState.READY
    metrics = await (await gateway.get("/metrics")).text()
    assert "leadgate_openlines_halted 0.0" in metrics


async def test_placement_page_is_static_and_framed_by_the_portal_only(gateway: Client) -> None:
    resp = await gateway.post("/v1/openlines/placement", data={"PLACEMENT": "SETTING_CONNECTOR"})
    assert resp.status == 200
    assert "leadgate openlines setup" in await resp.text()
    csp = resp.headers["Content-Security-Policy"]
    assert "frame-ancestors https://portal.example.bitrix24.ru" in csp


@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        ({"client_id": "local.1.2"}, "client_id is set, so these must be too"),
        ({"connector_id": "lead.gate"}, "Bitrix24 refuses a dot"),
        ({"portal": "https://x.bitrix24.ru"}, "host name"),
        ({"public_url": "ftp://x"}, "public_url must be an http(s) URL"),
    ],
)
def test_openlines_config_is_checked(section: dict[str, Any], fragment: str) -> None:
    from gateway.config import load_settings

    with pytest.raises(ConfigError) as caught:
        load_settings(None, openlines=section)
    assert any(fragment in p and p.startswith("openlines") for p in caught.value.problems), (
        caught.value.problems
    )
