"""Shared pieces of the Open Lines tests: the stand-in, settings pointing at it, an app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from b24_openlines_standin import Bitrix24AppStandIn
from conftest import make_settings

from gateway.config import Settings
from gateway.delivery.openlines.service import CLIENT, KEEPER
from gateway.delivery.openlines.tokens import TokenKeeper
from gateway.web import create_app

Client = TestClient[Any, Any]
PUBLIC_URL = "https://leads.example.ru"


@pytest.fixture
async def portal() -> AsyncIterator[Bitrix24AppStandIn]:
    server = Bitrix24AppStandIn()
    await server.start()
    yield server
    await server.stop()


def openlines_section(portal: Bitrix24AppStandIn, **extra: Any) -> dict[str, Any]:
    return {
        "portal": "portal.example.bitrix24.ru",
        "client_id": portal.client_id,
        "client_secret": portal.client_secret,
        "public_url": PUBLIC_URL,
        "line": 1,
        "api_base": f"{portal.url}/rest",
        "oauth_url": portal.url,
        "timeout_seconds": 5,
        **extra,
    }


def ol_settings(tmp_path: Path, portal: Bitrix24AppStandIn, **extra: Any) -> Settings:
    overrides = extra.pop("settings", {})
    # The stand-in starts with an empty bucket: no need to wait as after a real restart.
    overrides.setdefault("delivery", {"bitrix24": {"assume_busy_on_start": False}})
    return make_settings(tmp_path, openlines=openlines_section(portal, **extra), **overrides)


@pytest.fixture
async def gateway(
    aiohttp_client: Callable[..., Any], tmp_path: Path, portal: Bitrix24AppStandIn
) -> Client:
    made: Client = await aiohttp_client(create_app(ol_settings(tmp_path, portal)))
    return made


def keeper_of(client: Client) -> TokenKeeper:
    return client.app[KEEPER]


def app_client_of(client: Client) -> Any:
    return client.app[CLIENT]


async def install(portal: Bitrix24AppStandIn, client: Client, **auth: Any) -> tuple[int, Any]:
    url = str(client.make_url("/v1/openlines/install"))
    return await portal.post(url, portal.install_form(**auth))


async def post_event(
    portal: Bitrix24AppStandIn, client: Client, event: str, data: dict[str, Any], **auth: Any
) -> tuple[int, Any]:
    url = str(client.make_url("/v1/openlines/events"))
    return await portal.post(url, portal.event_form(event, data, **auth))
