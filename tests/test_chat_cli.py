"""The chat side on the command line: `leads show` prints the transcript (masked), `inbox
list` shows what could not be handled, `inbox retry` hands it back to the worker; beside a
gateway on SQLite and on Redis (chat_factory runs both)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from test_conversations import (  # noqa: F401  (the fixture is used by name)
    Chat,
    chat_factory,
    eventually,
    open_now_calendar,
)

from gateway import cli
from gateway.chat_service import INBOX_WORKER
from gateway.keys import SETTINGS


async def main(argv: list[str]) -> int:
    """The CLI as a person runs it, beside the running gateway (its own event loop)."""
    return await asyncio.to_thread(cli.main, argv)


def _config(tmp_path: Path, chat: Chat) -> str:
    """A config naming the running gateway's store (its SQLite file or its Redis)."""
    store = chat.client.app[SETTINGS].store
    if store.kind == "redis":
        assert store.url is not None
        section = (
            f'kind = "redis"\nurl = "{store.url.get_secret_value()}"\nprefix = "{store.prefix}"'
        )
    else:
        section = f'path = "{store.path}"'
    path = tmp_path / "cli.toml"
    path.write_text(f"[store]\n{section}\n", encoding="utf-8")
    return str(path)


async def test_leads_show_prints_the_transcript_masked(
    chat_factory: Callable[..., Awaitable[Chat]],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    chat = await chat_factory()
    await chat.handled(await chat.post(text="Позвоните мне на +7 916 123-45-67", lang="ru"))
    lead_id = await chat.only_lead_id()
    await chat.settled(lead_id)
    assert await main(["-c", _config(tmp_path, chat), "leads", "show", lead_id]) == 0
    out = capsys.readouterr().out
    assert "переписка:" in out
    assert "← " in out and "vk/shop клиент: Позвоните мне на" in out
    assert "+7 916 123-45-67" not in out  # the terminal is a log too
    assert "→ " in out and "auto: Здравствуйте! Спасибо за сообщение." in out
    assert "[sent]" in out
    assert await main(["-c", _config(tmp_path, chat), "leads", "show", lead_id, "--json"]) == 0
    assert '"messages"' in capsys.readouterr().out


async def test_inbox_list_and_retry(
    chat_factory: Callable[..., Awaitable[Chat]],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    chat = await chat_factory(calendar=open_now_calendar())
    resp = await chat.client.post(
        "/v1/testchat/shop", json={"update_id": 5}, headers={"X-Secret": "test-chat-secret"}
    )
    assert resp.status == 200

    async def dead() -> list[Any]:
        return [i for i in await chat.store.list_inbox() if i.state.value == "dead"]

    await eventually(dead)
    config = _config(tmp_path, chat)
    assert await main(["-c", config, "inbox", "list", "--state", "dead"]) == 0
    out = capsys.readouterr().out
    assert "testchat: pending 0, dead 1" in out
    assert "unprocessable: no chat" in out
    assert "leadgate inbox retry --all-dead" in out
    assert await main(["-c", config, "inbox", "list", "--json"]) == 0
    assert '"body": "{\\"update_id\\": 5}"' in capsys.readouterr().out
    assert await main(["-c", config, "inbox", "retry", "--all-dead"]) == 0
    assert "1 entry queued to be handled again" in capsys.readouterr().out
    chat.client.app[INBOX_WORKER].wake()  # it would look at its next poll anyway

    async def dead_again() -> bool:
        metrics = await (await chat.client.get("/metrics")).text()
        line = 'leadgate_inbox_handled_total{account="shop",channel="testchat",result="dead"}'
        return f"{line} 2.0" in metrics

    await eventually(dead_again)  # handled again (and dead again: it still has no chat)
