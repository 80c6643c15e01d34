"""[store] min_replicas: no 2xx for a write no replica confirmed (WAIT).

The other side — with a replica, a 2xx, and no acknowledged write lost when the master
dies — is tests/test_sentinel_failover.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.keys import STORE
from gateway.web import create_app
from tests.conftest import make_settings
from tests.redis_server import RedisTarget

FORM = {"name": "Иван", "phone": "+79161234567"}


async def test_a_write_no_replica_confirmed_is_a_503_and_its_retry_a_replay(
    aiohttp_client: Callable[..., Any], tmp_path: Path, redis_target: RedisTarget
) -> None:
    # A server without replicas: WAIT 1 never gets its confirmation.
    store = {"kind": "redis", "url": redis_target.url, "prefix": redis_target.prefix,
             "min_replicas": 1, "replica_wait_seconds": 0.2}  # fmt: skip
    client = await aiohttp_client(create_app(make_settings(tmp_path, store=store)))
    headers = {"Idempotency-Key": "form-min-replicas-1"}
    resp = await client.post("/v1/forms/site", json=FORM, headers=headers)
    assert resp.status == 503
    assert (await resp.json())["error"] == "store_unavailable"
    # The master has it (nothing is rolled back): the sender's retry finds it, and is
    # still not told "stored" while no replica confirms.
    again = await client.post("/v1/forms/site", json=FORM, headers=headers)
    assert again.status == 503
    event = await client.app[STORE].event_for_key("form:site:form-min-replicas-1")
    assert event is not None
