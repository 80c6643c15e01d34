"""gateway.redisconn on a real server: the durability check and the [store] redis settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.config import ConfigError, StoreSettings, load_settings
from gateway.redisconn import DurabilityMode, RedisNotDurable, check_durability, connect
from tests.redis_server import RedisServer, RedisTarget, free_port


async def test_a_server_that_fsyncs_every_write_is_durable(redis_target: RedisTarget) -> None:
    client = connect(StoreSettings(kind="redis", url=redis_target.url))
    try:
        if redis_target.server is None:
            pytest.skip("REDIS_URL given: its persistence settings are the operator's")
        d = await check_durability(client, DurabilityMode.ALWAYS)
        assert d.durable
        assert d.detail == "appendonly=yes appendfsync=always no-appendfsync-on-rewrite=no"
    finally:
        await client.aclose()


@pytest.fixture
def everysec_server(tmp_path: Path) -> object:
    server = RedisServer(free_port(), tmp_path / "redis", extra=["--appendfsync", "everysec"])
    server.start()
    yield server
    server.stop()


async def test_a_server_that_fsyncs_once_a_second_is_refused_unless_relaxed(
    everysec_server: RedisServer,
) -> None:
    client = connect(StoreSettings(kind="redis", url=everysec_server.url))
    try:
        with pytest.raises(RedisNotDurable, match="appendfsync always") as caught:
            await check_durability(client, DurabilityMode.ALWAYS)
        assert "appendfsync=everysec" in str(caught.value)
        assert str(everysec_server.port) not in str(caught.value)  # no address in the message
        relaxed = await check_durability(client, DurabilityMode.RELAXED)
        assert not relaxed.durable and relaxed.mode is DurabilityMode.RELAXED
    finally:
        await client.aclose()


async def test_skipping_the_fsync_during_rewrites_is_not_durable(tmp_path: Path) -> None:
    """Under `appendfsync always` too: while a BGSAVE or AOF rewrite runs, nothing is fsynced."""
    server = RedisServer(
        free_port(), tmp_path / "redis", extra=["--no-appendfsync-on-rewrite", "yes"]
    )
    server.start()
    client = connect(StoreSettings(kind="redis", url=server.url))
    try:
        with pytest.raises(RedisNotDurable, match="no-appendfsync-on-rewrite no"):
            await check_durability(client, DurabilityMode.ALWAYS)
        await client.config_set("no-appendfsync-on-rewrite", "no")
        assert (await check_durability(client, DurabilityMode.ALWAYS)).durable
    finally:
        await client.aclose()
        server.stop()


def test_redis_store_needs_a_server_and_sentinels_are_host_port() -> None:
    with pytest.raises(ConfigError, match="needs url"):
        load_settings(None, store={"kind": "redis"})
    with pytest.raises(ConfigError, match="host:port"):
        load_settings(None, store={"kind": "redis", "sentinels": ["nohost"]})
    s = load_settings(None, store={"kind": "redis", "url": "redis://:pw@h:6379/2"})
    assert "pw" not in repr(s.store)  # the URL may carry a password


async def test_client_decodes_text(redis_target: RedisTarget) -> None:
    client: aioredis.Redis = connect(StoreSettings(kind="redis", url=redis_target.url))
    try:
        await client.set(redis_target.prefix + "x", "привет")
        assert await client.get(redis_target.prefix + "x") == "привет"
    finally:
        await client.aclose()
