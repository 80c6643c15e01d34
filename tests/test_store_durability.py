"""[store] durability on a real Redis, through `leadgate serve` as a real process.

"always" (the default) and a server that fsyncs once a second: the gateway does not start,
says which setting to change, no traceback. "relaxed": it starts and says so on /readyz,
/ops and in leadgate_store_durable; the check runs again on every /readyz, so a CONFIG SET
on the running server shows at once, either way.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.redis_server import RedisServer, free_port, unique_prefix
from tests.served import Served
from tests.test_serve_process import clean_env, command

ADMIN = "durability-admin-token-0123"


@pytest.fixture
def everysec(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test's own: its fsync policy is changed at runtime here."""
    server = RedisServer(free_port(), tmp_path / "redis", extra=["--appendfsync", "everysec"])
    server.start()
    yield server
    server.stop()


def config(url: str, durability: str | None = None) -> str:
    mode = f'durability = "{durability}"\n' if durability else ""
    return (
        f'[store]\nkind = "redis"\nurl = "{url}"\nprefix = "{unique_prefix()}"\n{mode}'
        f'\n[admin.tokens]\nops = "{ADMIN}"\n'
    )


def get(url: str, **headers: str) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def readyz(base: str) -> dict[str, Any]:
    status, body = get(f"{base}/readyz")
    assert status == 200, body  # degraded is still serving: the balancer keeps sending
    answer: dict[str, Any] = json.loads(body)
    return answer


def durable_gauge(base: str) -> str:
    _, body = get(f"{base}/metrics")
    lines = [ln for ln in body.splitlines() if ln.startswith("leadgate_store_durable{")]
    assert len(lines) == 1, lines
    return lines[0]


def run_serve(workdir: Path, toml: str) -> subprocess.CompletedProcess[str]:
    (workdir / "leadgate.toml").write_text(toml, encoding="utf-8")
    return subprocess.run(
        [*command(), "serve", "-c", "leadgate.toml", "--port", str(free_port())],
        cwd=workdir,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_always_refuses_to_start_on_a_server_that_fsyncs_once_a_second(
    tmp_path: Path, everysec: RedisServer
) -> None:
    done = run_serve(tmp_path, config(everysec.url))
    assert done.returncode != 0
    assert "appendfsync always" in done.stderr  # the server setting to change
    assert 'durability = "relaxed"' in done.stderr  # or ours, knowingly
    assert "appendfsync=everysec" in done.stderr  # what the server says now
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "leadgate.db").exists()  # checked before the store opened


def test_a_redis_that_does_not_answer_stops_the_start_with_a_reason(tmp_path: Path) -> None:
    done = run_serve(tmp_path, config(f"redis://127.0.0.1:{free_port()}/0"))
    assert done.returncode != 0
    assert "did not answer" in done.stderr and "[store]" in done.stderr
    assert "Traceback" not in done.stderr


def test_relaxed_starts_and_says_so_everywhere_and_a_runtime_change_shows(
    tmp_path: Path, everysec: RedisServer
) -> None:
    with Served(tmp_path, config(everysec.url, "relaxed")) as app:
        ready = readyz(app.base)
        assert ready["status"] == "degraded"
        [problem] = [p for p in ready["problems"] if p.startswith("store:")]
        assert problem.startswith("store: Redis does not fsync every write before answering")
        assert "appendfsync=everysec" in problem and 'durability = "relaxed"' in problem
        assert str(everysec.port) not in problem  # /readyz is open: no address
        assert durable_gauge(app.base) == 'leadgate_store_durable{mode="relaxed"} 0.0'

        auth = {"Authorization": f"Bearer {ADMIN}"}
        status, body = get(f"{app.base}/ops/data", **auth)
        assert status == 200
        assert any("appendfsync=everysec" in p for p in json.loads(body)["problems"])
        status, page = get(f"{app.base}/ops", **auth, **{"Accept-Language": "ru"})
        assert status == 200
        assert "хранилище" in page and "Redis не сохраняет каждую запись" in page

        # The operator fixes the server while the gateway runs: the next /readyz sees it.
        admin = redis.Redis(port=everysec.port)
        try:
            admin.config_set("appendfsync", "always")
            assert not [p for p in readyz(app.base)["problems"] if p.startswith("store:")]
            assert durable_gauge(app.base) == 'leadgate_store_durable{mode="relaxed"} 1.0'
        finally:
            admin.close()
    assert "Traceback" not in app.stderr()


def test_always_sees_a_server_weakened_at_runtime(tmp_path: Path, everysec: RedisServer) -> None:
    admin = redis.Redis(port=everysec.port)
    try:
        admin.config_set("appendfsync", "always")
        with Served(tmp_path, config(everysec.url)) as app:
            assert not [p for p in readyz(app.base)["problems"] if p.startswith("store:")]
            assert durable_gauge(app.base) == 'leadgate_store_durable{mode="always"} 1.0'
            admin.config_set("appendfsync", "everysec")
            [problem] = [p for p in readyz(app.base)["problems"] if p.startswith("store:")]
            assert problem.startswith("store: Redis stopped fsyncing every write")
            assert "appendfsync always" in problem and 'durability = "always"' in problem
            assert durable_gauge(app.base) == 'leadgate_store_durable{mode="always"} 0.0'
    finally:
        admin.close()
