"""Settings loading and the `leadgate` CLI: init, check-config, leads, calendar."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import ADMIN_TOKEN, ORDERS_TOKEN

from gateway.cli import main
from gateway.config import ConfigError, load_settings
from gateway.web import create_app


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LEADGATE_"):
            monkeypatch.delenv(name)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- load_settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "where"),
    [
        ("colour = 'red'\n", "colour"),
        ("[server]\nprot = 8080\n", "server.prot"),
        (
            "[forms.site.fields.phone]\nlabel = 'Телефон'\nrequird = true\n",
            "forms.site.fields.phone.requird",
        ),
        ("[[sellers]]\nid = 'anna'\nnme = 'Анна'\n", "sellers.0.nme"),
        ("[calendar.hours]\nmonday = ['10:00-19:00']\n", "calendar.hours.monday"),
        ("[orders]\ntoken = 'x'\n", "orders.token"),
    ],
)
def test_unknown_key_names_its_path(tmp_path: Path, toml: str, where: str) -> None:
    path = write(tmp_path / "leadgate.toml", toml)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert any(p.startswith(f"{where}:") for p in info.value.problems), info.value.problems
    assert info.value.source == str(path)


def test_every_problem_is_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path / "leadgate.toml",
        "loglevel = 'x'\n[server]\nport = 70000\n[[sellers]]\nid = 'a'\nnme = 'A'\n",
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    wheres = {p.split(":", 1)[0] for p in info.value.problems}
    assert {"loglevel", "server.port", "sellers.0.nme", "sellers.0.name"} <= wheres


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path / "bad.toml", "[server\nport = 1"))


def test_defaults_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8080
    assert settings.store.path == Path("leadgate.db")
    assert settings.calendar.timezone == "Europe/Moscow"
    assert list(settings.forms) == ["site"]
    assert settings.sellers == []


def test_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "leadgate.toml", "[server]\nhost = '0.0.0.0'\nport = 9000\n")
    monkeypatch.setenv("LEADGATE_SERVER__PORT", "9100")
    monkeypatch.setenv("LEADGATE_LOG_LEVEL", "DEBUG")
    settings = load_settings(path)
    assert settings.server.port == 9100
    assert settings.server.host == "0.0.0.0"  # the rest of the section still from the file
    assert settings.log_level == "DEBUG"


def test_env_names_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "other.toml", "[server]\nport = 9300\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEADGATE_CONFIG", str(path))
    assert load_settings().server.port == 9300


def test_bad_env_value_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEADGATE_SERVER__PORT", "not-a-port")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert any(p.startswith("server.port:") for p in info.value.problems)


def test_sources_keep_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path / "l.toml", "[sources]\nvk = 'UC_VKONTAKTE'\n"))
    assert settings.sources["vk"] == "UC_VKONTAKTE"
    assert settings.sources["phone"] == "CALL"


# --- init and check-config -------------------------------------------------------------------


def test_init_writes_a_file_check_config_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    written = tmp_path / "leadgate.toml"
    text = written.read_text(encoding="utf-8")
    assert text.count("#") > 20  # commented
    assert written.stat().st_mode & 0o077 == 0  # holds tokens: owner only
    capsys.readouterr()

    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "ok" in out
    assert "1 seller(s)" in out
    settings = load_settings(written)
    tokens = [t.get_secret_value() for t in settings.orders.tokens.values()] + [
        t.get_secret_value() for t in settings.admin.tokens.values()
    ]
    assert len(tokens) == 2 and all(len(t) >= 32 for t in tokens)
    for token in tokens:
        assert token not in out  # secrets are never printed

    # A second init does not overwrite what the user edited.
    assert main(["init"]) == 1
    assert written.read_text(encoding="utf-8") == text
    assert main(["init", "--force"]) == 0
    assert written.read_text(encoding="utf-8") != text


def test_check_config_without_file_uses_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["check-config"]) == 0
    assert "built-in defaults" in capsys.readouterr().out


def test_check_config_names_every_bad_path_never_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "s3cr3t-order-token-value-123456"
    admin_secret = "another-very-secret-admin-token"
    path = write(
        tmp_path / "bad.toml",
        f"""
log_level = "LOUD"
[server]
prot = 8080
[orders.tokens]
site = "{secret}"
shop = ["{secret}"]
[admin]
tokens = {{ ops = "{admin_secret}" }}
token = "{admin_secret}"
[[sellers]]
id = "anna"
nme = "Анна"
[forms.site.fields.phone]
label = "Телефон"
requird = true
[calendar]
timezone = "Mars/Olympus"
""",
    )
    code = main(["check-config", "-c", str(path)])
    assert code == 2
    captured = capsys.readouterr()
    out = captured.out + captured.err
    for where in (
        "log_level",
        "server.prot",
        "orders.tokens.shop",
        "admin.token",
        "sellers.0.nme",
        "forms.site.fields.phone.requird",
        "calendar.timezone",
    ):
        assert where in out, (where, out)
    assert secret not in out
    assert admin_secret not in out
    assert "LOUD" not in out  # values are not echoed at all


def test_config_option_before_any_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "bad.toml", "colour = 1\n")
    assert main(["-c", str(path), "check-config"]) == 2
    assert "colour" in capsys.readouterr().err
    assert main(["-c", str(path), "calendar", "--json"]) == 2


# --- leads list / show through a real app on the same DB ------------------------------------


async def cli(argv: list[str]) -> int:
    """The CLI is its own program (it runs its own event loop): off this test's loop."""
    return await asyncio.to_thread(main, argv)


async def test_leads_list_and_show_after_posting(
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = tmp_path / "shared.db"
    config = write(
        tmp_path / "leadgate.toml",
        f"""
[store]
path = "{db}"
[orders.tokens]
site = "{ORDERS_TOKEN}"
[admin.tokens]
ops = "{ADMIN_TOKEN}"
[[sellers]]
id = "anna"
name = "Анна"
""",
    )
    client: TestClient[Any, Any] = await aiohttp_client(create_app(load_settings(config)))
    resp = await client.post(
        "/v1/forms/site",
        json={
            "name": "Иван Петров",
            "phone": "8 916 123-45-67",
            "email": "ivan.petrov@mail.ru",
            "comment": "Перезвоните на тел.89031234567 или ivan.p@почта.рф",
        },
    )
    form = await resp.json()
    resp = await client.post(
        "/v1/orders",
        json={"order_id": "CLI-1", "customer": {"name": "Ольга", "phone": "+79031112233"}},
        headers={"Authorization": f"Bearer {ORDERS_TOKEN}"},
    )
    order = await resp.json()
    resp = await client.post("/v1/forms/site", json={"name": "Иван", "phone": "+79161234567"})
    assert (await resp.json())["outcome"] == "merged"
    capsys.readouterr()

    # While the gateway runs: the CLI reads the same file.
    assert await cli(["-c", str(config), "leads", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [lead["id"] for lead in listed] == [order["lead_id"], form["lead_id"]]
    assert listed[1]["contact"]["phones"] == ["+79161234567"]  # --json is explicit: full data

    assert await cli(["-c", str(config), "leads", "list", "--channel", "orders", "--json"]) == 0
    assert [lead["id"] for lead in json.loads(capsys.readouterr().out)] == [order["lead_id"]]

    assert await cli(["-c", str(config), "leads", "list"]) == 0
    text = capsys.readouterr().out
    assert form["lead_id"] in text and order["lead_id"] in text
    assert "Иван Петров" in text
    for secret in ("+79161234567", "79161234567", "9161234567", "ivan.petrov@mail.ru"):
        assert secret not in text
    assert "4567" in text  # the masked tail still tells numbers apart

    assert await cli(["-c", str(config), "leads", "show", form["lead_id"], "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == form["lead_id"]
    assert [e["outcome"] for e in shown["events"]] == ["created", "merged"]
    assert shown["events"][1]["matched_on"] == "phone"

    assert await cli(["-c", str(config), "leads", "show", form["lead_id"]]) == 0
    text = capsys.readouterr().out
    assert form["lead_id"] in text
    assert "merged (по phone)" in text
    assert "+79161234567" not in text and "ivan.petrov@mail.ru" not in text
    # What the customer wrote is masked too (found in review: it was printed raw).
    assert "89031234567" not in text and "ivan.p@почта.рф" not in text

    assert await cli(["-c", str(config), "leads", "show", "01JNOSUCHLEAD000000000000"]) == 1

    await client.close()
    # After the gateway stopped, the file still reads the same.
    assert await cli(["-c", str(config), "leads", "list", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def test_leads_without_store_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="no store"):
        main(["leads", "list"])


# --- calendar ---------------------------------------------------------------------------------


def test_calendar_json_on_holiday(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["calendar", "--at", "2026-01-05T12:00+03:00", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["open"] is False
    assert "Новогодние каникулы" in result["reason"]
    assert result["next_open_at"] == "2026-01-12T10:00:00+03:00"
    assert result["sla_due_at"] == "2026-01-12T10:15:00+03:00"
    assert result["timezone"] == "Europe/Moscow"


def test_calendar_json_in_hours_and_naive_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    # Without an offset the time is read in the calendar's zone (Moscow).
    assert main(["calendar", "--at", "2026-01-13T12:00", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["open"] is True
    assert result["reason"] is None
    assert result["next_open_at"] is None
    assert result["at"] == "2026-01-13T12:00:00+03:00"
    assert result["sla_due_at"] == "2026-01-13T12:15:00+03:00"


def test_calendar_text_and_channel_hours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "leadgate.toml", "[calendar.channels.phone]\nsat = ['10:00-14:00']\n")
    assert main(["calendar", "--at", "2026-01-17T12:00+03:00"]) == 0
    assert "закрыто" in capsys.readouterr().out
    assert main(["calendar", "--at", "2026-01-17T12:00+03:00", "--channel", "phone"]) == 0
    assert "открыто до 14:00" in capsys.readouterr().out


def test_calendar_bad_time_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["calendar", "--at", "tomorrow"])
    assert info.value.code == 2
    assert "ISO 8601" in capsys.readouterr().err
