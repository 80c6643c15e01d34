"""SIGKILL through real `leadgate serve` processes: an event VK got `ok` for is handled
after the restart, once; an answer whose send was cut off by the kill reaches the customer
once (VK's random_id), however often it is tried again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from conftest import ADMIN_AUTH, ADMIN_TOKEN
from served import free_port
from vk_standin import VkStandIn
from vk_support import GROUP, SECRET, TOKEN, event, eventually, standin

from gateway.hours import DAYS

__all__ = ["standin"]

USER = 463526827
MOSCOW = ZoneInfo("Europe/Moscow")


def config(directory: Path, api_base: str) -> str:
    later = datetime.now(MOSCOW) + timedelta(days=2)  # closed now: the answer goes out
    return f"""
log_level = "INFO"
[store]
path = "{directory / "leadgate.db"}"
[admin.tokens]
ops = "{ADMIN_TOKEN}"
[[sellers]]
id = "anna"
name = "Анна"
[calendar.channels.vk]
{DAYS[later.weekday()]} = ["10:00-11:00"]
[conversations]
backoff_initial_seconds = 0.1
backoff_max_seconds = 0.2
[[vk.communities]]
group_id = {GROUP}
confirmation = "a1b2c3d4"
secret = "{SECRET}"
token = "{TOKEN}"
api_base = "{api_base}"
timeout_seconds = 60
"""


class Gateway:
    """`leadgate serve` as a child process of this event loop (the stand-in lives here)."""

    def __init__(self, directory: Path, api_base: str) -> None:
        self.directory = directory
        self.path = directory / "leadgate.toml"
        self.path.write_text(config(directory, api_base), encoding="utf-8")
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self.starts = 0

    async def start(self, session: aiohttp.ClientSession) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.starts += 1
        log = (self.directory / f"server-{self.starts}.log").open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEADGATE_")}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; from gateway.cli import main; sys.exit(main())",
            "serve",
            "-c",
            str(self.path),
            "--port",
            str(port),
            cwd=self.directory,
            stdout=log,
            stderr=log,
            env={**env, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.returncode is None, self.log()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{self.url}/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
        raise AssertionError(f"leadgate serve did not start: {self.log()}")

    def log(self) -> str:
        path = self.directory / f"server-{self.starts}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        self.proc = None

    async def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), 30)
            self.proc = None


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield s


def message(cmid: int, text: str) -> dict[str, Any]:
    body = event("message_new_pre5103_bare.issue40.json", group_id=GROUP, event_id=f"k{cmid}")
    body["object"] = dict(body["object"], text=text, conversation_message_id=cmid, id=cmid)
    return body


async def the_lead(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    async with session.get(f"{url}/v1/leads", headers=ADMIN_AUTH) as resp:
        leads = (await resp.json())["leads"]
    if len(leads) != 1:
        return None
    async with session.get(f"{url}/v1/leads/{leads[0]['id']}", headers=ADMIN_AUTH) as resp:
        lead: dict[str, Any] = await resp.json()
    return lead


async def test_sigkill_after_ok_loses_no_event_and_answers_once(
    tmp_path: Path, standin: VkStandIn, session: aiohttp.ClientSession
) -> None:
    gateway = Gateway(tmp_path, standin.url)
    standin.allowed.add((GROUP, USER))
    # Handling stalls in the name lookup: the events are kept and answered, not yet handled.
    standin.delay["users.get"] = 60.0
    await gateway.start(session)
    try:
        texts = ["Здравствуйте!", "Нужен подъёмник", "Когда сможете ответить?"]
        for cmid, text in enumerate(texts, start=1):
            async with session.post(f"{gateway.url}/v1/vk", json=message(cmid, text)) as resp:
                assert (resp.status, await resp.text()) == (200, "ok")

        async def looking_up() -> bool:
            return bool(standin.called("users.get"))

        await eventually(looking_up)
        assert await the_lead(session, gateway.url) is None  # nothing handled yet
        await gateway.kill()

        # VK answers again; the first send of the after-hours answer is done by VK but its
        # answer never comes back: the gateway is killed while waiting for it.
        standin.delay.clear()
        standin.hold_after["messages.send"] = 60.0
        await gateway.start(session)

        async def sending() -> bool:
            return len(standin.sent) == 1

        await eventually(sending, within=30)
        await gateway.kill()

        standin.hold_after.clear()
        await gateway.start(session)

        async def answered() -> dict[str, Any] | None:
            lead = await the_lead(session, gateway.url)
            if lead is None:
                return None
            auto = [m for m in lead["messages"] if m["author"] == "auto"]
            return lead if auto and auto[0]["status"] == "sent" else None

        lead = await eventually(answered, within=30)
        inbound = [m["text"] for m in lead["messages"] if m["direction"] == "in"]
        assert inbound == texts  # every acknowledged event, once, in order
        assert len(lead["events"]) == 3
        assert lead["contact"]["name"] == "Иван Петров"
        (delivered,) = standin.sent  # tried again after the kill, delivered once
        assert len(standin.called("messages.send")) >= 2
        auto = [m for m in lead["messages"] if m["author"] == "auto"]
        assert len(auto) == 1 and auto[0]["external_id"] == str(delivered.message_id)
    finally:
        await gateway.stop()
    assert "Traceback" not in gateway.log()
