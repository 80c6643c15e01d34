"""The connection to Redis shared by the Redis store and the Redis coordination.

One server (`[store] url`) or a Sentinel group (`[store] sentinels` + `master`): with
Sentinel the client asks the sentinels for the current master on every new connection, so
after a failover the gateway follows the promoted replica.

`check_durability` is why a 2xx still means durable on Redis: the server must append every
write to its AOF and fsync it before it answers (`appendonly yes`, `appendfsync always`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ResponseError

from gateway.config import StoreSettings


class DurabilityMode(StrEnum):
    ALWAYS = "always"  # every acknowledged write is on the server's disk
    RELAXED = "relaxed"  # the operator accepted losing the last writes on a power cut


class RedisNotDurable(RuntimeError):
    """The server would answer before its disk has the write, and the operator did not
    accept that (`[store] durability = "relaxed"`). The message names the setting."""


@dataclass(frozen=True)
class Durability:
    durable: bool
    mode: DurabilityMode
    # What the server says (e.g. "appendonly=yes appendfsync=everysec"): shown on /readyz
    # and /ops when not durable; never contains an address or a password.
    detail: str


def connect(
    store: StoreSettings,
    *,
    decode: bool = True,
    name: str | None = None,
    max_connections: int | None = None,
) -> aioredis.Redis:
    """A client for the configured server or the Sentinel group's current master.
    Replies are decoded as UTF-8 text unless `decode` is False (bytes: pub/sub payloads).
    `name` is set on each connection (CLIENT SETNAME), so CLIENT LIST shows who holds it.
    `max_connections=1` makes a client whose commands all share one connection (WAIT
    counts the replicas that have the writes of its own connection)."""
    url = store.url.get_secret_value() if store.url is not None else None
    common: dict[str, Any] = {
        "decode_responses": decode,
        "socket_timeout": store.timeout_seconds,
        "socket_connect_timeout": store.timeout_seconds,
        "health_check_interval": 30,
    }
    if name is not None:
        common["client_name"] = name
    if max_connections is not None:
        common["max_connections"] = max_connections
    if not store.sentinels:
        assert url is not None  # StoreSettings requires url or sentinels
        return aioredis.Redis.from_url(url, **common)
    options: dict[str, Any] = {}
    if url is not None:
        parts = urlsplit(url)
        if parts.username:
            options["username"] = parts.username
        if parts.password:
            options["password"] = parts.password
        if parts.path.strip("/").isdigit():
            options["db"] = int(parts.path.strip("/"))
        if parts.scheme == "rediss":
            options["ssl"] = True
    hosts = [(h, int(p)) for h, _, p in (s.rpartition(":") for s in store.sentinels)]
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        hosts,
        socket_timeout=store.timeout_seconds,
        socket_connect_timeout=store.timeout_seconds,
    )
    client: aioredis.Redis = sentinel.master_for(store.master, **common, **options)
    return client


async def check_durability(client: aioredis.Redis, mode: DurabilityMode) -> Durability:
    """Does the server fsync every write before it answers? In mode ALWAYS a "no" raises
    RedisNotDurable naming the setting; in RELAXED it is returned for /readyz and /ops.

    `no-appendfsync-on-rewrite yes` counts as a "no": with it Redis skips the fsync while a
    child process runs (every BGSAVE snapshot and AOF rewrite), even under `always`."""
    names = ("appendonly", "appendfsync", "no-appendfsync-on-rewrite")
    try:
        found = {name: (await client.config_get(name)).get(name, "") for name in names}
    except ResponseError:
        # Managed services rename or forbid CONFIG: we cannot see, so we cannot promise.
        found = dict.fromkeys(names, "unknown (CONFIG GET refused)")
    detail = " ".join(f"{name}={value}" for name, value in found.items())
    durable = (
        found["appendonly"] == "yes"
        and found["appendfsync"] == "always"
        and found["no-appendfsync-on-rewrite"] == "no"
    )
    if not durable and mode is DurabilityMode.ALWAYS:
        raise RedisNotDurable(
            f"Redis does not fsync every write before answering ({detail}): set "
            "`appendonly yes`, `appendfsync always` and `no-appendfsync-on-rewrite no` on "
            "the server (redis.conf, or CONFIG SET appendonly yes / CONFIG SET appendfsync "
            "always), or accept losing the last acknowledged events on a power cut with "
            '[store] durability = "relaxed"'
        )
    return Durability(durable=durable, mode=mode, detail=detail)
