"""The command line as ops and newcomers meet it (issue 17's traps, each with a test):
--version, a closed pipe, one rule for times, call summaries in `leads show`, read-only
commands without the server's secrets, Kubernetes service variables, a mistyped store
directory, a missing ca_file, JSON logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from test_serve_process import clean_env, command, free_port, wait_healthy

from gateway.cli import main
from gateway.config import load_settings
from gateway.logs import setup_logging
from gateway.metrics import Metrics
from gateway.models import Channel, Contact, LeadEvent
from gateway.store.sqlite import SQLiteStore
from gateway.version import VERSION
from gateway.web import create_app, make_pipeline

VENDOR = Path(__file__).parent / "connectors" / "fixtures" / "vendor"
Client = TestClient[Any, Any]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


async def cli(argv: list[str]) -> int:
    return await asyncio.to_thread(main, argv)


async def make_store(path: Path, events: list[LeadEvent]) -> None:
    settings = load_settings(None, store={"path": str(path)})
    store = SQLiteStore(path)
    await store.open()
    pipeline = make_pipeline(settings, store, Metrics())
    for event in events:
        await pipeline.accept(event)
    await store.close()


def form_event(n: int, at: datetime) -> LeadEvent:
    return LeadEvent(
        channel=Channel.WEBFORM,
        external_id=f"f-{n}",
        occurred_at=at,
        received_at=at,
        contact=Contact(name=f"Клиент {n}", phones=(f"+7916{n:07d}",)),
        text="Нужен подъёмник",
    )


# --- --version, a closed pipe ----------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"leadgate {VERSION}"
    assert VERSION != "unknown"  # installed: the version comes from the package


def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path: Path) -> None:
    # More output than a pipe holds, so the writer is still writing when `head` leaves.
    at = datetime(2026, 1, 13, 9, 0, tzinfo=UTC)
    asyncio.run(make_store(tmp_path / "leadgate.db", [form_event(i, at) for i in range(1500)]))
    proc = subprocess.Popen(
        [*command(), "leads", "list", "--limit", "1500"],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == 0, stderr
    assert first.startswith(b"01") and "Traceback" not in stderr and "BrokenPipe" not in stderr


# --- times: one rule ---------------------------------------------------------------------------


async def test_list_prints_calendar_time_with_offset_and_since_reads_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    early = datetime(2026, 1, 13, 6, 56, 30, tzinfo=UTC)  # 09:56:30 in Moscow
    late = early + timedelta(hours=2)
    await make_store(tmp_path / "leadgate.db", [form_event(1, early), form_event(2, late)])
    assert await cli(["leads", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "2026-01-13 11:56 +03:00" in lines[0] and "2026-01-13 09:56 +03:00" in lines[1]
    # A time copied from the list finds its lead (and the ones after it).
    assert await cli(["leads", "list", "--since", "2026-01-13 09:56 +03:00"]) == 0
    assert capsys.readouterr().out.splitlines() == lines
    assert await cli(["leads", "list", "--since", "2026-01-13 11:56 +03:00"]) == 0
    found = capsys.readouterr().out
    assert "Клиент 2" in found and "Клиент 1" not in found
    # Without an offset: the calendar's zone, the same moment.
    assert await cli(["leads", "list", "--since", "2026-01-13T11:56"]) == 0
    assert capsys.readouterr().out == found
    # An explicit offset is respected: 08:56 UTC is 11:56 in Moscow.
    assert await cli(["leads", "list", "--since", "2026-01-13T08:56Z"]) == 0
    assert capsys.readouterr().out == found
    with pytest.raises(SystemExit):
        await cli(["leads", "list", "--since", "yesterday"])
    assert "2026-11-27 09:56 +03:00" in capsys.readouterr().err  # the usage says how


async def test_leads_show_prints_a_calls_summary(
    aiohttp_client: Callable[..., Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = tmp_path / "leadgate.db"
    config = write(
        tmp_path / "leadgate.toml",
        f'[store]\npath = "{db}"\n[telephony.zadarma]\napi_secret = "test-secret"\n'
        "max_age_hours = 0\n"  # the corpus was recorded in 2025
        '[[sellers]]\nid = "anna"\nname = "Анна"\nextension = "100"\n',
    )
    client: Client = await aiohttp_client(create_app(load_settings(config)))
    for name in ("notify_start", "notify_answer", "notify_end"):
        fixture = json.loads((VENDOR / "zadarma" / f"{name}.json").read_text("utf-8"))
        resp = await client.post(
            "/v1/telephony/zadarma", data=fixture["form"], headers=fixture["headers"]
        )
        assert resp.status == 200, await resp.text()
    assert await cli(["-c", str(config), "leads", "list", "--json"]) == 0
    (lead,) = json.loads(capsys.readouterr().out)
    assert await cli(["-c", str(config), "leads", "show", lead["id"]]) == 0
    shown = capsys.readouterr().out
    events = [line for line in shown.splitlines() if line.startswith("  - ")]
    assert len(events) == 2, shown
    assert all(not line.rstrip().endswith(":") for line in events), shown  # none empty
    assert "Входящий звонок с +48" in events[0]
    assert "Разговор, 42 с, ответил(а) anna" in events[1]
    assert "48123123123" not in shown  # masked like any log line


# --- read-only commands need no server secrets -----------------------------------------------


async def test_read_only_commands_work_without_the_servers_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith("LEADGATE_")]:
        monkeypatch.delenv(name)
    await make_store(tmp_path / "leadgate.db", [form_event(1, datetime.now(UTC))])
    # The mailbox password and the Bitrix24 webhook are given to `serve` by environment only.
    write(
        tmp_path / "leadgate.toml",
        '[email.mailboxes.sales]\nhost = "imap.yandex.ru"\nusername = "sales@example.ru"\n'
        '[delivery]\nsink = "bitrix24"\n',
    )
    assert await cli(["check-config"]) == 2  # the server's check still wants them
    err = capsys.readouterr().err
    assert "email.mailboxes.sales.password" in err
    for argv in (
        ["leads", "list"],
        ["outbox", "list"],
        ["quarantine", "list"],
        ["calendar", "--at", "2026-01-13T12:00"],
    ):
        assert await cli(argv) == 0, (argv, capsys.readouterr().err)
        capsys.readouterr()
    # A typo is still a typo for them.
    write(tmp_path / "leadgate.toml", "[store]\npaht = 'x.db'\n")
    assert await cli(["leads", "list"]) == 2
    assert "store.paht" in capsys.readouterr().err


# --- environment variables ---------------------------------------------------------------------


KUBERNETES = {
    "LEADGATE_PORT": "tcp://10.96.12.7:8080",
    "LEADGATE_PORT_8080_TCP": "tcp://10.96.12.7:8080",
    "LEADGATE_PORT_8080_TCP_ADDR": "10.96.12.7",
    "LEADGATE_PORT_8080_TCP_PORT": "8080",
    "LEADGATE_PORT_8080_TCP_PROTO": "tcp",
    "LEADGATE_SERVICE_HOST": "10.96.12.7",
    "LEADGATE_SERVICE_PORT": "8080",
    "LEADGATE_SERVICE_PORT_HTTP": "8080",
    "LEADGATE_REDIS_SERVICE_HOST": "10.96.3.3",
    "LEADGATE_REDIS_PORT_6379_TCP_ADDR": "10.96.3.3",
}


def test_kubernetes_service_variables_do_not_stop_serve(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env() | KUBERNETES
    check = subprocess.run(
        [*command(), "check-config"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    assert "note: ignoring LEADGATE_PORT" in check.stdout
    proc = subprocess.Popen(
        [*command(), "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    log = stderr.decode()
    assert "WARNING leadgate: ignoring LEADGATE_PORT, LEADGATE_PORT_8080_TCP" in log
    assert "channels on: callback, orders, webform" in log
    assert "endpoints: GET /v1/leads" in log


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("LEADGATE_SEVER__PORT", "did you mean LEADGATE_SERVER__PORT?"),
        ("LEADGATE_SERVER_PORT", "did you mean LEADGATE_SERVER__PORT?"),
        ("LEADGATE_STORE_PATH", "did you mean LEADGATE_STORE__PATH?"),
        ("LEADGATE_TELEPHONY__CTI_TOKEN", None),  # a known section: its key is checked inside
        ("LEADGATE_SOMETHING", None),
    ],
)
def test_a_misspelt_setting_is_still_refused_with_a_hint(
    name: str, hint: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, "9000")
    assert main(["check-config"]) == 2
    err = capsys.readouterr().err
    if name == "LEADGATE_TELEPHONY__CTI_TOKEN":
        assert "telephony.cti_token: Extra inputs are not permitted" in err
        return
    assert f"environment {name}: no setting of that name" in err
    if hint:
        assert hint in err


# --- store.path, ca_file -----------------------------------------------------------------------


def test_a_mistyped_store_directory_is_an_error_and_nothing_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "leadgate.toml", '[store]\npath = "/var/lib/leadgte/leadgate.db"\n')
    assert main(["check-config"]) == 2
    err = capsys.readouterr().err
    assert "store.path: directory /var/lib/leadgte does not exist" in err
    assert main(["serve"]) == 2
    assert "store.path: directory /var/lib/leadgte does not exist" in capsys.readouterr().err
    assert not Path("/var/lib/leadgte").exists()


def test_a_missing_ca_file_fails_check_config_naming_key_and_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "leadgate.toml",
        '[email.mailboxes.sales]\nhost = "mail.example.ru"\nusername = "u"\npassword = "p"\n'
        f'ca_file = "{tmp_path}/ca.pem"\n',
    )
    assert main(["check-config"]) == 2
    err = capsys.readouterr().err
    assert f"email.mailboxes.sales.ca_file: Value error, file not found: {tmp_path}/ca.pem" in err


def test_a_ca_file_gone_after_start_is_logged_with_its_path(tmp_path: Path) -> None:
    from connectors.email.imap import tls_context

    with pytest.raises(OSError, match=f"ca_file {tmp_path}/gone.pem"):
        tls_context(str(tmp_path / "gone.pem"))


# --- JSON logs -------------------------------------------------------------------------------


def test_json_logs_are_one_object_per_line_and_masked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("INFO", "json")
        logging.getLogger("leadgate.test").info("lead from %s", "+79161234567")
        try:
            raise ValueError("bad mail from ivan.petrov@example.ru")
        except ValueError:
            logging.getLogger("leadgate.test").exception("failed")
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    lines = capsys.readouterr().err.strip().splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "INFO" and first["logger"] == "leadgate.test"
    assert first["message"] == "lead from +7******4567"
    assert datetime.fromisoformat(first["time"]).tzinfo is not None
    assert "ivan.petrov@example.ru" not in second["exception"]
    assert "i***@example.ru" in second["exception"]


def test_log_format_is_a_setting() -> None:
    assert load_settings(None).log_format == "text"
    assert load_settings(None, log_format="json").log_format == "json"


def test_calendar_reads_times_by_the_same_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    answers = []
    for at in ("2026-01-13 12:00 +03:00", "2026-01-13T12:00", "2026-01-13T09:00Z"):
        assert main(["calendar", "--at", at, "--json"]) == 0
        answers.append(json.loads(capsys.readouterr().out)["at"])
    assert answers == ["2026-01-13T12:00:00+03:00"] * 3
