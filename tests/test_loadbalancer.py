"""The shipped HAProxy config (docker/haproxy/haproxy.cfg) in front of two real replicas.

The file runs as shipped, with only its addresses moved to free local ports: both
replicas get requests and keep them in one Redis store; one killed with SIGKILL
mid-traffic loses no request (a refused connection goes to the other replica, and what it
acknowledged before it died is in the store), and the balancer marks it down by its
/readyz.
HAProxy is Debian's `haproxy` (scripts/test installs it); missing is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio

from gateway.store.base import LeadQuery
from gateway.store.redis import RedisStore
from tests.redis_server import RedisTarget, free_port
from tests.served import Served

SHIPPED = Path(__file__).resolve().parents[1] / "docker" / "haproxy" / "haproxy.cfg"


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(found).exists():
        pytest.fail("haproxy is not installed: run scripts/test (apt-get install haproxy)")
    return found


def post_form(base: str, n: int) -> tuple[int, str]:
    body = json.dumps({"name": f"Клиент {n}", "phone": f"+7 916 000-{n // 100:02d}-{n % 100:02d}"})
    req = urllib.request.Request(
        f"{base}/v1/forms/site",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get("X-Leadgate-Replica", "")
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("X-Leadgate-Replica", "")


async def stored_leads(target: RedisTarget) -> set[str]:
    """Every lead id in the replicas' shared store, read through the Store protocol."""
    store = RedisStore(
        redis.asyncio.Redis.from_url(target.url, decode_responses=True), prefix=target.prefix
    )
    await store.open()
    try:
        found: set[str] = set()
        before = None
        while page := await store.list_leads(LeadQuery(before_id=before, limit=200)):
            found |= {lead.id for lead in page}
            before = page[-1].id
        return found
    finally:
        await store.close()


def replica_config(target: RedisTarget, form_limit: int) -> str:
    # Both replicas keep their store and coordinate on one Redis; "relaxed" so a REDIS_URL
    # server that is not durable still starts (its /readyz is then 200 with a problem:
    # still in rotation).
    # Every request comes from the balancer's address: one client for the form limit.
    return (
        f'[store]\nkind = "redis"\nurl = "{target.url}"\nprefix = "{target.prefix}"\n'
        f'durability = "relaxed"\n[ratelimit]\nrequests = {form_limit}\nper_seconds = 3600\n'
    )


@contextlib.contextmanager
def two_replicas(
    tmp_path: Path, target: RedisTarget, ports: dict[str, int], form_limit: int
) -> Iterator[tuple[Served, Served]]:
    config = replica_config(target, form_limit)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        Served(tmp_path / "a", config, port=ports["gateway-1"]) as one,
        Served(tmp_path / "b", config, port=ports["gateway-2"]) as two,
    ):
        # Until the balancer's checks found both ready (rise 2, every 2 s).
        deadline = time.monotonic() + 30
        while server_states(ports["stats"]) != {"gateway-1": "UP", "gateway-2": "UP"}:
            assert time.monotonic() < deadline, "the balancer never saw both replicas ready"
            time.sleep(0.2)
        yield one, two
        assert "Traceback" not in two.stderr()


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[tuple[dict[str, int], Path]]:
    ports = {"lb": free_port(), "stats": free_port(), "gateway-1": free_port()}
    ports["gateway-2"] = free_port()
    text = SHIPPED.read_text(encoding="utf-8")
    for old, new in (
        ("bind :8080", f"bind 127.0.0.1:{ports['lb']}"),
        ("bind :8404", f"bind 127.0.0.1:{ports['stats']}"),
        ("gateway-1:8080", f"127.0.0.1:{ports['gateway-1']}"),
        ("gateway-2:8080", f"127.0.0.1:{ports['gateway-2']}"),
    ):
        assert old in text, f"{SHIPPED.name} no longer has {old!r}"
        text = text.replace(old, new)
    config = tmp_path / "haproxy.cfg"
    config.write_text(text, encoding="utf-8")
    log = tmp_path / "haproxy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [haproxy_binary(), "-db", "-f", str(config)], stdout=out, stderr=out
        )
    try:
        yield ports, log
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def server_states(stats_port: int) -> dict[str, str]:
    """Each replica's state as the balancer sees it (its Prometheus exporter)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    states: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("haproxy_server_status{") and line.endswith(" 1"):
            labels = dict(
                part.split("=", 1)
                for part in line[line.index("{") + 1 : line.index("}")].split(",")
            )
            states[labels["server"].strip('"')] = labels["state"].strip('"')
    return states


def test_two_replicas_behind_the_shipped_balancer_and_one_killed(
    tmp_path: Path, redis_target: RedisTarget, balancer: tuple[dict[str, int], Path]
) -> None:
    ports, _ = balancer
    lb = f"http://127.0.0.1:{ports['lb']}"
    with two_replicas(tmp_path, redis_target, ports, form_limit=10_000) as (one, _two):
        answered = Counter(post_form(lb, n) for n in range(20))
        assert answered == Counter({(201, "gateway-1"): 10, (201, "gateway-2"): 10})

        assert one.proc is not None
        one.proc.kill()  # SIGKILL: no goodbye, its connections refused from now on
        one.proc.wait(10)
        killed = time.monotonic()
        after: list[tuple[int, str]] = []
        while time.monotonic() - killed < 6:  # past the balancer's verdict (2 checks x 2 s)
            after.append(post_form(lb, 100 + len(after)))
            time.sleep(0.02)  # a steady stream, not a flood
        assert len(after) > 20
        assert all(a == (201, "gateway-2") for a in after), Counter(after)
        assert server_states(ports["stats"]) == {"gateway-1": "DOWN", "gateway-2": "UP"}
    # One store: every 2xx of either replica (the killed one's too) is a lead in it.
    assert len(asyncio.run(stored_leads(redis_target))) == 20 + len(after)


def test_the_form_limit_holds_for_both_replicas_together(
    tmp_path: Path, redis_target: RedisTarget, balancer: tuple[dict[str, int], Path]
) -> None:
    ports, _ = balancer
    lb = f"http://127.0.0.1:{ports['lb']}"
    with two_replicas(tmp_path, redis_target, ports, form_limit=7):
        answered = [post_form(lb, n) for n in range(20)]
    # One client (the balancer's address) gets 7 in the hour, whichever replica it reaches.
    assert [status for status, _ in answered] == [201] * 7 + [429] * 13
    assert {replica for status, replica in answered if status == 429} == {
        "gateway-1",
        "gateway-2",
    }
