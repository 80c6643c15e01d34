"""The tests' own Redis: started on a free port with AOF always, keys isolated by prefix."""

from __future__ import annotations

import os

import redis

from tests.redis_server import RedisTarget


def test_own_server_persists_every_write_and_is_not_the_machines(redis_target: RedisTarget) -> None:
    client = redis.Redis.from_url(redis_target.url)
    try:
        if not os.environ.get("REDIS_URL"):
            assert redis_target.server is not None
            assert redis_target.server.port != 6379
            assert client.config_get("appendonly")["appendonly"] == "yes"
            assert client.config_get("appendfsync")["appendfsync"] == "always"
        client.set(redis_target.prefix + "k", "v")
        client.set("not-ours:" + redis_target.prefix, "v")
        redis_target.cleanup()
        assert client.get(redis_target.prefix + "k") is None
        assert client.get("not-ours:" + redis_target.prefix) == b"v"  # only our prefix goes
        client.delete("not-ours:" + redis_target.prefix)
    finally:
        client.close()
