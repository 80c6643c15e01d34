"""The application's tokens: renewed on expired_token and near expiry, one renewal at a time,
the new pair stored before use, a refusal believed only when nobody else renewed."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from b24_openlines_standin import Bitrix24AppStandIn
from openlines_helpers import Client, app_client_of, gateway, install, keeper_of, portal

from gateway.coordination import InProcessCoordination
from gateway.delivery.b24client import B24Client, B24Error, LeakyBucket, portal_of
from gateway.delivery.openlines.client import AppClient, app_classify
from gateway.delivery.openlines.service import build
from gateway.delivery.openlines.tokens import REVOKED, TOKENS, AppState, AppTokens
from gateway.keys import SETTINGS, STORE

__all__ = ["gateway", "portal"]


async def installed(gateway: Client, portal: Bitrix24AppStandIn) -> AppTokens:
    status, body = await install(portal, gateway)
    assert status == 200, body
    tokens = keeper_of(gateway).tokens
    assert tokens is not None
    return tokens


async def stored(gateway: Client) -> AppTokens:
    raw = await gateway.app[STORE].get_checkpoint(TOKENS)
    assert raw is not None
    tokens = AppTokens.loads(raw)
    assert tokens is not None
    return tokens


async def test_token_expiring_mid_way_is_renewed_and_the_call_repeated(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    first = await installed(gateway, portal)
    client = app_client_of(gateway)
    assert (await client.call("app.info"))["CODE"] == portal.client_id
    portal.expire_access()
    assert (await client.call("app.info"))["CODE"] == portal.client_id
    assert portal.app.refreshes == 1
    assert [(e.method, e.status) for e in portal.log] == [
        ("app.info.json", 200),  # the installation check
        ("app.info.json", 200),
        ("app.info.json", 401),  # expired_token
        ("app.info.json", 200),  # repeated with the renewed token
    ]
    now = await stored(gateway)
    assert now.refresh_token != first.refresh_token
    assert portal.app.refresh[first.refresh_token] is False  # spent
    assert portal.app.refresh[now.refresh_token] is True
    assert now.refreshed_at is not None
    assert now.application_token == first.application_token  # kept across renewals


async def test_the_renewed_pair_is_stored_before_it_is_used(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    await installed(gateway, portal)
    portal.expire_access()
    portal.fail(status=500, error="INTERNAL_SERVER_ERROR", command="app.info")
    with pytest.raises(B24Error) as caught:
        await app_client_of(gateway).call("app.info")
    assert caught.value.kind == "retry"
    # The call failed after renewing: the store already holds the live pair.
    now = await stored(gateway)
    assert portal.app.refresh[now.refresh_token] is True
    assert now.access_token in portal.app.access


async def test_renewal_shortly_before_expiry_without_waiting_for_a_refusal(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    portal.access_ttl = 100
    await installed(gateway, portal)
    keeper = keeper_of(gateway)
    assert keeper.settings.refresh_margin_seconds == 60
    client = app_client_of(gateway)
    await client.call("app.info")
    assert portal.app.refreshes == 0  # 100 s left: nothing to do
    later = datetime.now(UTC) + timedelta(seconds=55)
    keeper._now = lambda: later
    await client.call("app.info")
    assert portal.app.refreshes == 1
    assert 401 not in [e.status for e in portal.log]  # renewed before it was refused
    await client.call("app.info")
    assert portal.app.refreshes == 1  # the new token has its whole life ahead


async def test_replicas_renew_once_and_the_others_reread(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    await installed(gateway, portal)
    settings = gateway.app[SETTINGS]
    shared = InProcessCoordination()
    replicas = [build(settings, gateway.app[STORE], shared) for _ in range(4)]
    for keeper, _ in replicas:
        await keeper.load()
    portal.expire_access()
    answers = await asyncio.gather(*(client.call("app.info") for _, client in replicas))
    assert all(a["CODE"] == portal.client_id for a in answers)
    assert portal.app.refreshes == 1
    assert portal.app.refused_refreshes == 0
    for keeper, client in replicas:
        await client.close()
        await keeper.oauth.close()


async def test_a_process_without_the_lease_racing_a_renewal_is_not_a_revocation(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    """The CLI beside the gateway shares no coordination with it: both may renew with the
    same refresh token. The loser's invalid_grant is not taken for a revoked app."""
    await installed(gateway, portal)
    settings = gateway.app[SETTINGS]
    pairs = [build(settings, gateway.app[STORE], InProcessCoordination()) for _ in range(2)]
    for keeper, _ in pairs:
        await keeper.load()
    portal.expire_access()
    answers = await asyncio.gather(*(client.call("app.info") for _, client in pairs))
    assert all(a["CODE"] == portal.client_id for a in answers)
    assert portal.app.refreshes == 1
    assert portal.app.refused_refreshes == 1
    for keeper, client in pairs:
        assert keeper.state is AppState.READY
        await client.close()
        await keeper.oauth.close()
    assert await gateway.app[STORE].get_checkpoint(REVOKED) is None


async def test_a_refused_refresh_token_stops_with_a_readiness_problem(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    tokens = await installed(gateway, portal)
    portal.expire_access()
    portal.app.refresh[tokens.refresh_token] = False  # revoked at the portal
    with pytest.raises(B24Error) as caught:
        await app_client_of(gateway).call("app.info")
    assert caught.value.kind == "halt"
    assert caught.value.code == "invalid_grant"
    keeper = keeper_of(gateway)
    assert keeper.state is AppState.REVOKED
    problems = (await (await gateway.get("/readyz")).json())["problems"]
    assert any("invalid_grant" in p and "reinstall" in p for p in problems), problems
    # Later calls do not knock on the auth server again.
    refused = portal.app.refused_refreshes
    with pytest.raises(B24Error):
        await app_client_of(gateway).call("app.info")
    assert portal.app.refused_refreshes == refused


async def test_auth_server_outage_is_transient(gateway: Client, portal: Bitrix24AppStandIn) -> None:
    await installed(gateway, portal)
    portal.expire_access()
    portal.fail_oauth(status=503)
    with pytest.raises(B24Error) as caught:
        await app_client_of(gateway).call("app.info")
    assert caught.value.kind == "retry"
    assert keeper_of(gateway).state is AppState.READY
    assert (await app_client_of(gateway).call("app.info"))["CODE"] == portal.client_id
    assert portal.app.refreshes == 1


async def test_query_limit_is_a_throttle_on_the_bucket_the_crm_sink_uses(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    await installed(gateway, portal)
    client: AppClient = app_client_of(gateway)
    # One budget per portal: the CRM sink keys its bucket the same way.
    assert client.bucket.key == f"b24:{portal_of(portal.webhook_url)}"
    portal.fill_bucket()
    with pytest.raises(B24Error) as caught:
        await client.call("app.info")
    assert caught.value.kind == "throttle"
    assert caught.value.code == "QUERY_LIMIT_EXCEEDED"
    assert caught.value.retry_after is not None and caught.value.retry_after > 0


async def test_imconnector_through_a_webhook_is_wrong_auth_type(
    portal: Bitrix24AppStandIn,
) -> None:
    webhook = B24Client(
        portal.webhook_url,
        bucket=LeakyBucket(InProcessCoordination(), "portal", 50, 2.0),
    )
    try:
        with pytest.raises(B24Error) as caught:
            await webhook.call("imconnector.register", {"ID": "leadgate"})
    finally:
        await webhook.close()
    assert caught.value.status == 403
    assert caught.value.code == "WRONG_AUTH_TYPE"
    # As the application, the same answer means: stop, a person must look.
    assert app_classify(403, "WRONG_AUTH_TYPE") == "halt"
    assert app_classify(401, "expired_token") == "renew"


async def test_tokens_never_show_in_errors_or_logs(
    gateway: Client, portal: Bitrix24AppStandIn, caplog: Any
) -> None:
    tokens = await installed(gateway, portal)
    portal.expire_access()
    portal.app.refresh[tokens.refresh_token] = False
    with pytest.raises(B24Error) as caught:
        await app_client_of(gateway).call("app.info")
    text = str(caught.value) + caplog.text + str(await (await gateway.get("/readyz")).json())
    for secret in (tokens.access_token, tokens.refresh_token, portal.client_secret):
        assert secret not in text


async def test_a_portal_that_moved_is_a_halt_and_is_not_followed(
    aiohttp_server: Any,
) -> None:
    from aiohttp import web

    followed: list[str] = []

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("https://elsewhere.example/rest/app.info.json")

    async def elsewhere(request: web.Request) -> web.Response:
        followed.append(request.path)
        return web.json_response({"result": True})

    app = web.Application()
    app.router.add_post("/rest/{method}", moved)
    app.router.add_post("/elsewhere", elsewhere)
    server = await aiohttp_server(app)
    webhook = B24Client(
        str(server.make_url("/rest/")),
        bucket=LeakyBucket(InProcessCoordination(), "portal", 50, 2.0),
    )
    try:
        with pytest.raises(B24Error) as caught:
            await webhook.call("crm.lead.add", {"fields": {"TITLE": "x"}})
    finally:
        await webhook.close()
    assert caught.value.kind == "halt"
    assert caught.value.code == "PORTAL_MOVED"
    assert "elsewhere.example" in str(caught.value)
    assert followed == []


async def test_a_reinstall_during_a_renewal_wins_over_the_renewed_old_pair(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    """F09: the renewal of the old installation's tokens must not overwrite the tokens of
    a reinstallation that arrived while the auth server was answering."""
    first = await installed(gateway, portal)
    portal.oauth_gate = asyncio.Event()
    portal.expire_access()
    call = asyncio.create_task(app_client_of(gateway).call("app.info"))
    await asyncio.wait_for(portal.oauth_entered.wait(), 10)  # the renewal is in flight
    second = portal.issue()
    reinstall = asyncio.create_task(install(portal, gateway, tokens=second))
    await asyncio.sleep(0.3)  # the reinstallation reaches the gateway meanwhile
    portal.oauth_gate.set()
    status, body = await asyncio.wait_for(reinstall, 30)
    assert status == 200, body
    assert (await asyncio.wait_for(call, 30))["CODE"] == portal.client_id
    now = await stored(gateway)
    assert now.refresh_token == second["refresh_token"]
    assert now.installed_at > first.installed_at
    assert keeper_of(gateway).tokens == now
    # And the reinstalled pair is the one in use from here on.
    assert (await app_client_of(gateway).call("app.info"))["CODE"] == portal.client_id
    assert (await stored(gateway)).refresh_token == second["refresh_token"]


async def test_a_renewal_never_overwrites_an_installation_written_behind_its_lease(
    gateway: Client, portal: Bitrix24AppStandIn
) -> None:
    """The same race when the new installation did not wait for the lease (another
    replica whose lease ran out, a restore): the store's generation decides."""
    first = await installed(gateway, portal)
    portal.oauth_gate = asyncio.Event()
    portal.expire_access()
    call = asyncio.create_task(app_client_of(gateway).call("app.info"))
    await asyncio.wait_for(portal.oauth_entered.wait(), 10)
    second = replace(
        first,
        access_token=portal.issue()["access_token"],
        refresh_token="refresh-of-the-new-installation",
        installed_at=first.installed_at + timedelta(seconds=5),
    )
    await gateway.app[STORE].save_checkpoint(TOKENS, second.dumps())
    portal.oauth_gate.set()
    assert (await asyncio.wait_for(call, 30))["CODE"] == portal.client_id
    assert await stored(gateway) == second
    assert keeper_of(gateway).tokens == second
