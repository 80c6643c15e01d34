"""`leadgate quarantine list|show|release|delete` beside a running gateway, and what the
gateway does with a release: telephony and email run their kept input again through the
pipeline; a channel that cannot is handed to a person; unreadable input stays kept."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from gateway.channels import ReplayRefused
from gateway.cli import main
from gateway.config import load_settings
from gateway.keys import STORE
from gateway.models import Outcome, Receipt
from gateway.quarantine import Releaser
from gateway.store.base import Quarantined, QuarantineEntry, QuarantineState, Store
from gateway.store.sqlite import SQLiteStore
from gateway.web import create_app

HERE = Path(__file__).parent
VENDOR = HERE / "connectors" / "fixtures" / "vendor"
MAIL = HERE / "connectors" / "fixtures" / "email"
Client = TestClient[Any, Any]
ADMIN = {"Authorization": "Bearer quarantine-test-admin"}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


async def cli(argv: list[str]) -> int:
    return await asyncio.to_thread(main, argv)


@pytest.fixture
async def gateway(aiohttp_client: Callable[..., Any], tmp_path: Path) -> tuple[Client, Path, Store]:
    """A running gateway with telephony and a mailbox (on a closed port: it never connects,
    and nothing here needs it to), and its config for the CLI."""
    config = write(
        tmp_path / "leadgate.toml",
        f'[store]\npath = "{tmp_path / "leadgate.db"}"\n'
        '[telephony.zadarma]\napi_secret = "test-secret"\n'
        '[email.mailboxes.sales]\nhost = "127.0.0.1"\nport = 9\nsecurity = "plain"\n'
        'username = "sales@stroymash-market.ru"\npassword = "x"\nbackoff_max_seconds = 60\n'
        '[[sellers]]\nid = "anna"\nname = "Анна"\n'
        '[admin.tokens]\nops = "quarantine-test-admin"\n',
    )
    app = create_app(load_settings(config))
    client: Client = await aiohttp_client(app)
    return client, config, app[STORE]


def zadarma_start() -> bytes:
    fixture = json.loads((VENDOR / "zadarma" / "notify_start.json").read_text("utf-8"))
    return orjson.dumps(fixture["form"])


async def test_list_show_delete(
    gateway: tuple[Client, Path, Store], capsys: pytest.CaptureFixture[str]
) -> None:
    _, config, store = gateway
    body = b"From: ivan.petrov@example.ru\r\nSubject: x\r\n\r\nPhone +79161234567\r\n"
    await store.quarantine(
        Quarantined("email", "malformed: X", body, {"mailbox": "sales", "uid": "7"})
    )
    await store.quarantine(Quarantined("phone", "cti: no call id", b"{}", {}))
    capsys.readouterr()
    assert await cli(["-c", str(config), "quarantine", "list"]) == 0
    out = capsys.readouterr().out
    assert "email     kept      malformed: X" in out and "phone" in out
    assert "+03:00" in out  # the CLI's one time rule
    assert await cli(["-c", str(config), "quarantine", "list", "--state", "kept", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["channel"] for e in listed] == ["email", "phone"]
    first = listed[0]["id"]

    assert await cli(["-c", str(config), "quarantine", "show", str(first)]) == 0
    shown = capsys.readouterr().out
    assert "mailbox: sales" in shown and "Phone +7******4567" in shown
    assert "ivan.petrov@example.ru" not in shown  # masked on the terminal
    assert await cli(["-c", str(config), "quarantine", "show", str(first), "--json"]) == 0
    assert "ivan.petrov@example.ru" in json.loads(capsys.readouterr().out)["body"]
    assert await cli(["-c", str(config), "quarantine", "show", "999"]) == 1

    assert await cli(["-c", str(config), "quarantine", "delete", str(first), "999"]) == 1
    assert capsys.readouterr().out.splitlines() == [f"{first}: deleted", "999: no such entry"]
    assert [e.channel for e in await store.list_quarantine()] == ["phone"]


async def test_release_runs_telephony_and_email_input_again(
    gateway: tuple[Client, Path, Store], capsys: pytest.CaptureFixture[str]
) -> None:
    client, config, store = gateway
    # Kept by an older version that could not read them; this one can.
    await store.quarantine(Quarantined("phone", "zadarma: call_start unreadable", zadarma_start()))
    mail = (MAIL / "auto_reply_vacation.eml").read_bytes()
    await store.quarantine(
        Quarantined(
            "email",
            "not a customer: auto_reply",
            mail,
            {"mailbox": "sales", "folder": "INBOX", "uid": "7"},
        )
    )
    # Still unreadable: a start with no call id.
    broken = {k: v for k, v in orjson.loads(zadarma_start()).items() if k != "pbx_call_id"}
    await store.quarantine(Quarantined("phone", "zadarma: no pbx_call_id", orjson.dumps(broken)))
    # A channel with no connector here.
    await store.quarantine(Quarantined("vk", "unknown", b"{}"))
    ids = [str(e.id) for e in await store.list_quarantine()]
    capsys.readouterr()

    assert await cli(["-c", str(config), "quarantine", "release", *ids]) == 1  # one stays kept
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{ids[0]}: released — run again: event ")
    assert "(created)" in out[0]
    assert out[1].startswith(f"{ids[1]}: released — run again: event ") and "(created)" in out[1]
    assert out[2].startswith(f"{ids[2]}: kept — run again: still unreadable")
    assert out[3] == (
        f"{ids[3]}: released — released to a person: the vk channel is not configured here; "
        "act on it by hand"
    )

    leads = await (await client.get("/v1/leads", headers=ADMIN)).json()
    channels = sorted(lead["channel"] for lead in leads["leads"])
    assert channels == ["email", "phone"]
    phone = next(lead for lead in leads["leads"] if lead["channel"] == "phone")
    assert phone["contact"]["phones"] == ["+48123123123"]
    # Released twice: the pipeline recognizes the call, no second lead.
    assert await cli(["-c", str(config), "quarantine", "release", ids[0]]) == 0
    assert "(replayed)" in capsys.readouterr().out
    again = await (await client.get("/v1/leads", headers=ADMIN)).json()
    assert len(again["leads"]) == 2


# --- the releaser on its own -----------------------------------------------------------------


class Replaying:
    name = "phone-like"

    def __init__(self, answer: Receipt | Exception | None) -> None:
        self.answer = answer

    async def replay_quarantined(self, entry: QuarantineEntry) -> Receipt | None:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class Plain:
    name = "plain"


@pytest.mark.parametrize(
    ("connector", "state", "note"),
    [
        (
            Replaying(Receipt(event_id="E1", lead_id="L1", outcome=Outcome.CREATED)),
            QuarantineState.RELEASED,
            "run again: event E1, lead L1 (created)",
        ),
        (Replaying(None), QuarantineState.RELEASED, "run again: read, but it makes no event"),
        (Replaying(ReplayRefused("still bad")), QuarantineState.KEPT, "run again: still bad"),
        (
            Replaying(RuntimeError("bug for ivan@example.ru")),
            QuarantineState.KEPT,
            "run again: failed (RuntimeError: bug for i***@example.ru)",
        ),
        (
            Plain(),
            QuarantineState.RELEASED,
            "released to a person: the phone channel cannot run it again; act on it by hand",
        ),
    ],
)
async def test_the_releaser_answers_each_request(
    tmp_path: Path, connector: Any, state: QuarantineState, note: str
) -> None:
    store = SQLiteStore(tmp_path / "leadgate.db")
    await store.open()
    try:
        await store.quarantine(Quarantined("phone", "x", b"{}"))
        (entry,) = await store.list_quarantine()
        at = datetime(2026, 1, 12, tzinfo=UTC)
        await store.mark_quarantine(entry.id, QuarantineState.RELEASE, "asked", at)
        releaser = Releaser(store, {"phone": connector}, clock=lambda: at)
        assert await releaser.release_requested() == 1
        done = await store.get_quarantine(entry.id)
        assert done is not None and (done.state, done.note) == (state, note)
        assert await releaser.release_requested() == 0  # answered once
    finally:
        await store.close()
