"""Shared pieces of the delivery tests: a running stand-in, an app wired to it, waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from b24_standin import Bitrix24StandIn
from store_view import outbox_of

from gateway.store.base import OutboxItem

ORDERS_TOKEN = "orders-secret-token"
ORDER_AUTH = {"Authorization": f"Bearer {ORDERS_TOKEN}"}


@pytest.fixture
async def standin() -> AsyncIterator[Bitrix24StandIn]:
    server = Bitrix24StandIn()
    await server.start()
    yield server
    await server.stop()


def fast_delivery(webhook_url: str | None = None, **bitrix: Any) -> dict[str, Any]:
    """A [delivery] section that retries in milliseconds instead of seconds."""
    section: dict[str, Any] = {
        "poll_seconds": 0.02,
        "backoff_initial_seconds": 0.02,
        "backoff_max_seconds": 0.1,
        "wait_seconds": 0.05,
        "halt_probe_seconds": 0.3,
    }
    if webhook_url is not None:
        section["sink"] = "bitrix24"
        section["bitrix24"] = {"webhook_url": webhook_url, "assume_busy_on_start": False, **bitrix}
    return section


def order(n: int | str, phone: str, name: str = "Пётр Смирнов", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_id": f"A-{n}",
        "customer": {"name": name, "phone": phone, "email": None, "company": None},
        "items": [
            {"name": "Токарный станок", "quantity": 1, "price": 250000, "category": "Крупное"}
        ],
        "utm": {"utm_source": "yandex", "utm_campaign": "spring"},
    }
    body.update(extra)
    return body


def phone(i: int) -> str:
    return f"+7 916 {100 + i // 10000:03d}-{(i // 100) % 100:02d}-{i % 100:02d}"


async def until(
    cond: Callable[[], bool | Awaitable[bool]], within: float = 10.0, step: float = 0.02
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = cond()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


async def until_outbox(
    db_path: Path, cond: Callable[[list[OutboxItem]], bool], within: float = 10.0
) -> list[OutboxItem]:
    """Wait until the outbox, read through the Store protocol, meets `cond`; return it."""
    seen: list[OutboxItem] = []

    async def check() -> bool:
        nonlocal seen
        seen = await outbox_of(db_path)
        return cond(seen)

    await until(check, within)
    return seen


def states(items: list[OutboxItem]) -> list[str]:
    return [item.state.value for item in items]
