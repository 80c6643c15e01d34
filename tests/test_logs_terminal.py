"""What reaches a person's screen is escaped and masked: log lines and the CLI.

Each test performs the attack from issue 16 with the handler `leadgate serve` installs:
- a request line aiohttp refuses, carrying the CTI token, a phone whose groups are joined
  by UTF-8 non-breaking spaces and a Cyrillic email (aiohttp logs those bytes as \\xNN);
- phones written with "_", ",", "/" between their digits;
- a value with a newline and terminal escapes that would forge or colour a log line;
- an upload the client abandons halfway (used to log a 2 KB traceback each);
- a form name and a comment full of terminal escape sequences, then `leadgate leads`
  and `leadgate outbox` print them.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import make_settings

from gateway.cli import main
from gateway.logs import setup_logging
from gateway.redact import redact, register
from gateway.serving import GuardedRunner, Limits
from gateway.web import create_app

CTI_TOKEN = "cti-Tok3n-0123456789-abcdef"
# What a terminal would obey: ESC (CSI, OSC), BEL, CR, C1 CSI, bidi override, backspace.
TERMINAL_CONTROLS = ("\x1b", "\x07", "\r", "\x9b", "\u202e", "\x08")


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The handler `leadgate serve` installs, writing into a buffer."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    setup_logging("DEBUG", stream=buffer)
    yield buffer
    root.handlers[:] = handlers
    root.setLevel(level)


def _digits(text: str) -> str:
    """The digits a reader could piece together, escapes and separators ignored."""
    return re.sub(r"\\x[0-9a-fA-F]{2}|%[0-9A-Fa-f]{2}|\D", "", text)


@pytest.fixture(params=["guarded", "plain"])
async def port(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[int]:
    """The app on a real socket: behind `leadgate serve`'s runner, and behind aiohttp's own
    (which logs refused requests at ERROR with a traceback: the mask must hold there too)."""
    settings = make_settings(tmp_path, telephony={"cti": {"token": CTI_TOKEN}})
    app = create_app(settings)
    runner: web.AppRunner = (
        GuardedRunner(app, limits=Limits(), access_log=None)
        if request.param == "guarded"
        else web.AppRunner(app, access_log=None)
    )
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def _send(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        with contextlib.suppress(ConnectionResetError):
            return await asyncio.wait_for(reader.read(65536), 5)
        return b""
    finally:
        writer.close()


async def test_refused_request_line_is_logged_masked(port: int, log_stream: io.StringIO) -> None:
    line = (
        b"POST /v1/telephony/cti/" + CTI_TOKEN.encode() + b"?tel=+7\xc2\xa0916\xc2\xa0123"
        b"\xc2\xa045\xc2\xa067&mail=\xd0\xb8\xd0\xb2\xd0\xb0\xd0\xbd@mail.ru\x01 HTTP/1.1\r\n"
        b"Host: x\r\n\r\n"
    )
    answer = await _send(port, line)
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]
    await asyncio.sleep(0.05)
    log = log_stream.getvalue()
    assert log.strip(), "the refusal was not logged at all"
    assert CTI_TOKEN not in log and "0123456789" not in log
    assert "9161234567" not in _digits(log)
    assert "\\xd0\\xb8\\xd0\\xb2\\xd0\\xb0\\xd0\\xbd@" not in log
    assert "\x01" not in log


async def test_cti_token_in_the_path_never_reaches_the_log(
    port: int, log_stream: io.StringIO
) -> None:
    # A real, authentic CTI request that goes wrong (kept in quarantine, warned about)...
    body = b"{not json"
    raw = (
        b"POST /v1/telephony/cti/" + CTI_TOKEN.encode() + b" HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    assert b" 400 " in (await _send(port, raw)).split(b"\r\n")[0]
    # ...and our own code quoting a URL in any spelling.
    logging.getLogger("leadgate.test").warning(
        "seen /v1/telephony/cti/%s and %s", CTI_TOKEN.upper(), CTI_TOKEN.replace("-", "%2D")
    )
    log = log_stream.getvalue()
    assert "quarantine" in log
    assert CTI_TOKEN.lower() not in log.lower().replace("%2d", "-")
    assert "/v1/telephony/cti/***" in log


@pytest.mark.parametrize(
    "spelling",
    ["+7_916_123_45_67", "8,916,123,45,67", "8/916/123/45/67", "%2B7%2C916%2C123%2C45%2C67"],
)
def test_phones_with_underscore_comma_slash_are_masked(
    log_stream: io.StringIO, spelling: str
) -> None:
    logging.getLogger("leadgate.test").info("callback to %s", spelling)
    line = log_stream.getvalue()
    assert spelling not in line
    assert "9161234567" not in _digits(line)
    assert "4567" in line


def test_a_value_cannot_forge_or_colour_a_log_line(log_stream: io.StringIO) -> None:
    forged = "ok\n2026-01-01 00:00:00 ERROR gateway: forged\x1b[31m red\x1b]0;title\x07\r"
    logging.getLogger("leadgate.test").warning("form from %s", forged)
    out = log_stream.getvalue()
    assert out.count("\n") == 1  # one record, one line
    for control in TERMINAL_CONTROLS:
        assert control not in out
    assert "\\x0a" in out and "\\x1b" in out


async def test_an_abandoned_upload_logs_no_traceback(port: int, log_stream: io.StringIO) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/forms/site HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n" + b'{"name": "' + b"x" * 5000
    )
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.close()
    await asyncio.sleep(0.3)
    log = log_stream.getvalue()
    assert "Traceback" not in log
    assert not [line for line in log.splitlines() if " ERROR " in line], log
    assert len(log.splitlines()) <= 3


def test_redaction_is_case_and_encoding_blind() -> None:
    register("Zq9-secret-Value_42")
    for spelling in (
        "Zq9-secret-Value_42",
        "zq9-secret-value_42",
        "Zq9%2Dsecret%2DValue%5F42",
        "Zq9\\u002dsecret\\u002dValue_42",
    ):
        assert redact(f"x {spelling} y") == "x *** y", spelling


# --- the terminal ------------------------------------------------------------------------------


async def test_cli_output_shows_controls_escaped(
    aiohttp_client: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path)
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    name = "\x1b]8;;https://evil.example\x07Иван\x1b]8;;\x07\x1b[2J\x1b[H\r\u202eцкз\x9b31m"
    resp = await client.post(
        "/v1/forms/site",
        json={"name": name, "phone": "+7 916 123-45-67", "comment": "привет\x1b[1A\x08\x08!"},
    )
    assert resp.status == 201
    lead_id = (await resp.json())["lead_id"]
    config = tmp_path / "cli.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "leadgate.db"}"\n', encoding="utf-8")
    capsys.readouterr()
    for command in (
        ["leads", "list"],
        ["leads", "list", "--json"],
        ["leads", "show", lead_id],
        ["leads", "show", lead_id, "--json"],
        ["outbox", "list"],
        ["outbox", "list", "--json"],
    ):
        assert await asyncio.to_thread(main, ["-c", str(config), *command]) == 0
        out = capsys.readouterr().out
        for control in TERMINAL_CONTROLS:
            assert control not in out, (command, control, out)
        if command[0] == "leads":
            assert "Иван" in out  # the name is still there, readable
