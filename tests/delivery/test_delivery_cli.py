"""`leadgate outbox list|retry|dlq` on the database file while the gateway runs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from b24_standin import Bitrix24StandIn
from conftest import make_settings
from helpers import ORDER_AUTH, fast_delivery, order, standin, states, until_outbox

from gateway.cli import main
from gateway.web import create_app

__all__ = ["standin"]


def cli(config: Path, *args: str) -> list[str]:
    return ["-c", str(config), "outbox", *args]


async def test_list_dlq_and_retry_one_item(
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    standin: Bitrix24StandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = tmp_path / "leadgate.db"
    delivery = {**fast_delivery(standin.webhook_url), "max_attempts": 1}
    settings = make_settings(tmp_path, delivery=delivery)
    client = await aiohttp_client(create_app(settings))
    config = tmp_path / "leadgate.toml"
    config.write_text(f'[store]\npath = "{db}"\n', encoding="utf-8")

    standin.fail_command("crm.lead.add", "ERROR_CORE", "Поле TITLE слишком длинное")
    for n, tel in ((1, "+7 916 123-45-67"), (2, "+7 916 765-43-21")):
        resp = await client.post("/v1/orders", json=order(n, tel), headers=ORDER_AUTH)
        assert resp.status == 201
    await until_outbox(db, lambda rows: sorted(states(rows)) == ["dead", "delivered"])

    capsys.readouterr()
    assert await asyncio.to_thread(main, cli(config, "list", "--json")) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [i["state"] for i in listed] in (["dead", "delivered"], ["delivered", "dead"])
    dead = next(i for i in listed if i["state"] == "dead")
    assert "ERROR_CORE" in dead["last_error"]

    assert await asyncio.to_thread(main, cli(config, "dlq")) == 0
    text = capsys.readouterr().out
    assert "pending 0, dead 1" in text
    assert "Поле TITLE слишком длинное" in text
    assert "leadgate outbox retry --all-dead" in text

    assert await asyncio.to_thread(main, cli(config, "retry", str(dead["id"]))) == 0
    assert "1 item(s) queued" in capsys.readouterr().out
    await until_outbox(db, lambda rows: states(rows) == ["delivered", "delivered"])
    assert len(standin.leads) == 2

    # A delivered item is left alone: replaying it is not what retry is for.
    assert await asyncio.to_thread(main, cli(config, "retry", str(dead["id"]))) == 1
    assert await asyncio.to_thread(main, cli(config, "list", "--state", "pending")) == 0
    assert "(empty)" in capsys.readouterr().out
