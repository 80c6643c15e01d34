"""The newcomer path: `leadgate serve` in an empty directory, no config, real process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

LEADGATE = Path(sys.executable).with_name("leadgate")


def command() -> list[str]:
    if LEADGATE.exists():
        return [str(LEADGATE)]
    return [sys.executable, "-m", "gateway.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env() -> dict[str, str]:
    # No LEADGATE_* from the developer's shell: this is a fresh machine.
    return {k: v for k, v in os.environ.items() if not k.startswith("LEADGATE_")}


def request(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait_healthy(proc: subprocess.Popen[bytes], base: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"leadgate serve exited early with {proc.returncode}")
        try:
            if request(f"{base}/healthz")[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.05)  # polling for startup, not timing anything
    raise AssertionError("leadgate serve did not become healthy")


def test_serve_with_no_config_in_empty_dir(tmp_path: Path) -> None:
    assert list(tmp_path.iterdir()) == []
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env()
    proc = subprocess.Popen(
        [*command(), "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_healthy(proc, base)
        # The defaults: SQLite in the working directory.
        assert (tmp_path / "leadgate.db").exists()
        assert not (tmp_path / "leadgate.toml").exists()

        status, receipt = request(
            f"{base}/v1/forms/site", {"name": "Новичок", "phone": "+7 916 123-45-67"}
        )
        assert status == 201
        assert receipt["outcome"] == "created"

        # No sellers configured: still serving, but it says why it is degraded.
        status, ready = request(f"{base}/readyz")
        assert status == 200
        assert ready["status"] == "degraded"
        assert any("sellers" in p for p in ready["problems"])
        # No admin token configured: the read API stays closed.
        assert request(f"{base}/v1/leads")[0] == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail("leadgate serve did not stop on SIGTERM")
    assert proc.returncode == 0, stderr.decode()
    log = stderr.decode()
    assert "Traceback" not in log
    assert "+79161234567" not in log  # never a full phone in the log

    listed = subprocess.run(
        [*command(), "leads", "list", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        check=True,
    )
    leads = json.loads(listed.stdout)
    assert [lead["id"] for lead in leads] == [receipt["lead_id"]]
    assert leads[0]["contact"]["phones"] == ["+79161234567"]
    assert leads[0]["assigned_to"] is None
    assert leads[0]["status"] == "NEW"
