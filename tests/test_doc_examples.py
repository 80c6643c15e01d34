"""The docs' examples, run as written against a real `leadgate serve` in an empty directory.

docs/quickstart.md is replayed from top to bottom: every `$ command` in its code blocks
runs in a shell (curl against the served gateway, `leadgate …` as installed), and its
output must be the documented one once what differs by nature is set aside (ids, times,
tokens; an after-hours mark, since the test may run at night). The start log it shows
must appear in the real one. The calendar examples of docs/calendar.md and
docs/operations.md are deterministic and compared exactly. The full calls of
docs/channels/telephony.md are replayed from the vendor corpus and their leads compared.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_serve_process import clean_env, command, free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
ULID = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b")
STAMP = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?")
AFTER_HOURS = re.compile(r" после часов|; (?:outside hours|weekend|holiday)[^\n]*")


@dataclass
class Example:
    command: str
    output: list[str] = field(default_factory=list)


def examples(text: str) -> list[Example]:
    """Every `$ command` (with its continuation lines) and the output under it, in order."""
    found: list[Example] = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                if found and found[-1].command and block.startswith("$"):
                    found[-1].output.append(lines[i])
                i += 1
                continue
            cmd = lines[i][2:]
            while cmd.endswith("\\") or (cmd.count("'") % 2 == 1):
                i += 1
                cmd = cmd + "\n" + lines[i]
            found.append(Example(cmd))
            i += 1
    for ex in found:
        while ex.output and not ex.output[-1].strip():
            ex.output.pop()
    return found


class Ids:
    """Doc ids to the ids of this run, learned from outputs in the order they appear."""

    def __init__(self) -> None:
        self.real: dict[str, str] = {}

    def learn(self, documented: str, got: str) -> None:
        for doc_id, real_id in zip(ULID.findall(documented), ULID.findall(got), strict=False):
            self.real.setdefault(doc_id, real_id)

    def apply(self, text: str) -> str:
        return ULID.sub(lambda m: self.real.get(m.group(0), m.group(0)), text)


def normal(text: str) -> str:
    text = AFTER_HOURS.sub("", text)
    text = ULID.sub("<id>", text)
    text = STAMP.sub("<time>", text)
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


class Gateway:
    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[str] = []

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*command(), "serve", "--port", str(self.port)],
            cwd=self.cwd,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        wait_healthy(self.proc, f"http://127.0.0.1:{self.port}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        self.logs.append(err.decode())
        assert self.proc.returncode == 0, err.decode()
        self.proc = None


def shell(cmd: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    return done.stdout + done.stderr


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    # `leadgate` on the PATH, as the quickstart has it ("add .venv/bin/ to PATH").
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "leadgate").write_text(
        "#!/bin/sh\nexec " + " ".join(command()) + ' "$@"\n', encoding="utf-8"
    )
    (bin_dir / "leadgate").chmod(0o755)
    site = tmp_path / "site"
    site.mkdir()
    return site


def test_quickstart_runs_as_written(workdir: Path) -> None:
    if shutil.which("curl") is None:  # the quickstart's own tool; .ci/run installs it
        if os.environ.get("CI"):
            pytest.fail("curl is missing under CI: .ci/run must install it")
        pytest.skip("curl is not installed")
    text = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    gateway = Gateway(workdir)
    env = clean_env() | {"PATH": f"{workdir.parent / 'bin'}:{os.environ['PATH']}"}
    ids = Ids()
    ran = 0
    gateway.start()
    try:
        for ex in examples(text):
            cmd = ex.command.replace("localhost:8080", f"127.0.0.1:{gateway.port}")
            if cmd.startswith("leadgate init"):
                gateway.stop()  # "Stop the gateway (Ctrl-C) and write a config"
            got = shell(ids.apply(cmd), workdir, env)
            ids.learn("\n".join(ex.output), got)
            if cmd.startswith("leadgate check-config"):
                tokens = tomllib.loads((workdir / "leadgate.toml").read_text("utf-8"))
                env["ORDERS_TOKEN"] = tokens["orders"]["tokens"]["site"]
                env["ADMIN_TOKEN"] = tokens["admin"]["tokens"]["ops"]
                gateway.port = free_port()
                gateway.start()  # "Start the gateway again"
            documented = "\n".join(ex.output)
            if " -si " in cmd or " -i " in cmd:  # headers: the documented ones, among others
                for line in ex.output:
                    assert normal(line) in normal(got), (cmd, got)
            else:
                assert normal(got) == normal(documented), f"$ {cmd}\n{got}"
            ran += 1
    finally:
        gateway.stop()
    assert ran >= 10, "the quickstart lost its examples?"
    log = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:8080", normal("\n".join(gateway.logs)))
    start = re.search(r"It says what it runs.*?```\n(.*?)```", text, re.S)
    assert start is not None
    for line in normal(start.group(1)).splitlines():
        assert line in log, f"start log line not logged: {line}"


def _calendar_examples(page: str) -> list[Example]:
    return [
        ex
        for ex in examples((DOCS / page).read_text(encoding="utf-8"))
        if ex.command.startswith("leadgate calendar --at")
    ]


@pytest.mark.parametrize("page", ["calendar.md", "operations.md"])
def test_calendar_examples_run_as_written(page: str, workdir: Path) -> None:
    if page == "calendar.md":
        # "default calendar, plus the phone hours from the TOML above"
        toml = re.search(
            r"(\[calendar\.channels\.phone\].*?)\n\n", (DOCS / page).read_text("utf-8"), re.S
        )
        assert toml is not None
        (workdir / "leadgate.toml").write_text(toml.group(1) + "\n", encoding="utf-8")
    env = clean_env() | {"PATH": f"{workdir.parent / 'bin'}:{os.environ['PATH']}"}
    found = _calendar_examples(page)
    assert found
    for ex in found:
        got = shell(ex.command, workdir, env)
        assert got.strip() == "\n".join(ex.output).strip(), f"$ {ex.command}\n{got}"


# --- docs/channels/telephony.md: full calls from the vendor corpus ----------------------------


def _call_examples() -> list[tuple[str, Example]]:
    text = (DOCS / "channels" / "telephony.md").read_text(encoding="utf-8")
    found = []
    for marker, rest in re.findall(
        r"<!-- replay: (.*?) -->(.*?)(?=<!-- replay:|\n## )", text, re.S
    ):
        (shown,) = [ex for ex in examples(rest) if ex.command.startswith("leadgate leads show")]
        found.append((marker, shown))
    return found


def test_telephony_calls_are_documented_from_the_corpus() -> None:
    markers = [marker for marker, _ in _call_examples()]
    providers = {m.split("/", 1)[0] for marker in markers for m in marker.split()}
    assert providers == {"zadarma", "mango", "cti"}
    assert len(markers) == 6  # an answered and a missed call each


@pytest.mark.parametrize(("marker", "shown"), _call_examples(), ids=lambda v: str(v)[:40])
async def test_telephony_calls_replay_as_documented(
    marker: str,
    shown: Example,
    tmp_path: Path,
    aiohttp_client: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from conftest import make_settings
    from doc_calls import SELLERS, TELEPHONY, replay

    from gateway.cli import main
    from gateway.web import create_app

    settings = make_settings(tmp_path, telephony=TELEPHONY, sellers=SELLERS)
    client = await aiohttp_client(create_app(settings))
    answers = await replay(client, marker)
    assert all(a.startswith("200") for a in answers), answers
    config = tmp_path / "leadgate.toml"
    config.write_text(f'[store]\npath = "{settings.store.path}"\n', encoding="utf-8")
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["-c", str(config), "leads", "list", "--json"]) == 0
    (lead,) = json.loads(capsys.readouterr().out)
    assert await asyncio.to_thread(main, ["-c", str(config), "leads", "show", lead["id"]]) == 0
    got = capsys.readouterr().out
    assert normal(got) == normal("\n".join(shown.output)), f"{marker}\n{got}"
