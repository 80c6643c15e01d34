"""Shared fixtures: a gateway app on a temporary SQLite file, with tokens and a roster."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.config import Settings, load_settings
from tests.redis_server import RedisTarget, SentinelGroup, SessionRedis, session_redis

ORDERS_TOKEN = "orders-secret-token"
ADMIN_TOKEN = "admin-secret-token"


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "store": {"path": str(tmp_path / "leadgate.db")},
        "orders": {"tokens": {"site": ORDERS_TOKEN}},
        "admin": {"tokens": {"ops": ADMIN_TOKEN}},
        "sellers": [
            {"id": "anna", "name": "Анна", "crm_user_id": 1},
            {"id": "boris", "name": "Борис", "crm_user_id": 2},
        ],
        "ratelimit": {"requests": 1000, "per_seconds": 60},
    }
    base.update(overrides)
    return load_settings(None, **base)


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    return lambda **kw: make_settings(tmp_path, **kw)


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> AsyncIterator[TestClient[Any, Any]]:
    from gateway.web import create_app

    yield await aiohttp_client(create_app(make_settings(tmp_path)))


ORDER_AUTH = {"Authorization": f"Bearer {ORDERS_TOKEN}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="session")
def redis_session() -> Iterator[SessionRedis]:
    """REDIS_URL, or one redis-server of the tests' own for the whole run (tests/redis_server)."""
    yield from session_redis()


@pytest.fixture
def redis_target(redis_session: SessionRedis) -> Iterator[RedisTarget]:
    """A Redis URL and a key prefix of this test's own; its keys are deleted afterwards."""
    target = redis_session.target()
    try:
        yield target
    finally:
        target.cleanup()


@pytest.fixture
def redis_sentinel(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A master, a replica and three sentinels of this test's own, failing over in seconds
    (tests/redis_server.SentinelGroup); stopped afterwards."""
    group = SentinelGroup(tmp_path / "sentinel")
    try:
        yield group.start()
    finally:
        group.stop()
