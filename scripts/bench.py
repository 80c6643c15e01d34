#!/usr/bin/env python3
"""Forms hot-path benchmark: bare aiohttp and leadgate in the same run, same load generator.

    .venv/bin/python scripts/bench.py [--seconds 10] [--connections 32] [--rounds 3] [--write]

Both servers are single processes on 127.0.0.1. wrk (Debian package `wrk`) posts the site
form with a distinct person per request (a fresh phone number), so every request makes a
new lead: the worst case for the gateway (no replays, no merges) with durable writes
(SQLite WAL, synchronous=FULL, group commit). The baseline is what a hand-written aiohttp
endpoint does at the least: read the body, parse the JSON, answer a JSON receipt.
Rounds alternate the two servers so machine noise hits both alike; the median round counts.
With --write the result table goes into docs/benchmarks.md (section "Forms hot path").
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
END_MARK = "<!-- end of scripts/bench.py output -->"

BARE_APP = """
import orjson, sys
from aiohttp import web

async def form(request):
    data = orjson.loads(await request.read())
    return web.Response(status=201, body=orjson.dumps({"ok": True, "name": data.get("name")}),
                        content_type="application/json")

app = web.Application()
app.router.add_post("/v1/forms/site", form)
app.router.add_get("/healthz", lambda r: web.json_response({"status": "ok"}))
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

CONFIG = """
[store]
path = "{db}"
[ratelimit]
exempt = ["127.0.0.0/8"]
[[sellers]]
id = "anna"
name = "Анна"
[[sellers]]
id = "boris"
name = "Борис"
"""

# Each wrk thread numbers its own people; thread ids keep the numbers apart.
WRK_SCRIPT = r"""
local counter = 0
local tid = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  counter = 0
end
request = function()
  counter = counter + 1
  local phone = string.format("+7916%d%06d", tid, counter % 1000000)
  local body = '{"name":"Покупатель ' .. counter .. '","phone":"' .. phone ..
    '","equipment_type":"Мелкое","comment":"нужен прайс"}'
  return wrk.format("POST", "/v1/forms/site",
    {["Content-Type"] = "application/json"}, body)
end
"""


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    non2xx: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on {port} did not come up")


def to_ms(value: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if found is None:
        raise ValueError(f"wrk printed a latency bench.py cannot read: {value!r}")
    number, unit = found.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def run_wrk(port: int, seconds: int, connections: int, script: Path) -> Result:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    err = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(g) for g in err.groups()) if err else 0
    non2xx_m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Result(rps, p50, p99, errors, int(non2xx_m.group(1)) if non2xx_m else 0)


def start(cmd: list[str], cwd: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_ready(port)
    except RuntimeError:
        proc.kill()
        raise
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def count_leads(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM leads").fetchone()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is missing (Debian: apt-get install wrk)")

    work = Path(tempfile.mkdtemp(prefix="leadgate-bench-"))
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)
    (work / "bare.py").write_text(BARE_APP)
    bare_results: list[Result] = []
    gate_results: list[Result] = []
    acknowledged = stored = 0
    for round_no in range(args.rounds):
        port = free_port()
        bare = start([sys.executable, str(work / "bare.py"), str(port)], work, port)
        try:
            bare_results.append(run_wrk(port, args.seconds, args.connections, script))
        finally:
            stop(bare)

        db = work / f"round{round_no}.db"
        (work / "leadgate.toml").write_text(CONFIG.format(db=db))
        port = free_port()
        gate = start(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "-c",
                str(work / "leadgate.toml"),
                "serve",
                "--port",
                str(port),
            ],
            work,
            port,
        )
        try:
            result = run_wrk(port, args.seconds, args.connections, script)
            gate_results.append(result)
        finally:
            stop(gate)
        stored += count_leads(db)
        acknowledged += int(result.rps * args.seconds)
        print(
            f"round {round_no + 1}: bare {bare_results[-1].rps:.0f} req/s, "
            f"leadgate {result.rps:.0f} req/s (p99 {result.p99_ms:.1f} ms)",
            flush=True,
        )

    def med(results: list[Result], attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in results)

    bare_rps, gate_rps = med(bare_results, "rps"), med(gate_results, "rps")
    ratio = gate_rps / bare_rps
    rows = [
        (
            "bare aiohttp",
            bare_rps,
            med(bare_results, "p50_ms"),
            med(bare_results, "p99_ms"),
            sum(r.errors + r.non2xx for r in bare_results),
        ),
        (
            "leadgate",
            gate_rps,
            med(gate_results, "p50_ms"),
            med(gate_results, "p99_ms"),
            sum(r.errors + r.non2xx for r in gate_results),
        ),
    ]

    def num(value: float) -> str:
        return f"{value:,.0f}".replace(",", "\u202f")

    table = "\n".join(
        f"| {name} | {num(rps)} | {p50:.2f} | {p99:.2f} | {bad} |"
        for name, rps, p50, p99, bad in rows
    )
    gate_p99 = med(gate_results, "p99_ms")
    section = "\n".join(
        [
            "## Forms hot path",
            "",
            f"`scripts/bench.py --seconds {args.seconds} --connections {args.connections} "
            f"--rounds {args.rounds}`, run {datetime.now(UTC):%Y-%m-%d} on {platform.machine()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}. wrk with 1 thread and "
            f"{args.connections} connections posts `/v1/forms/site` with a distinct person per "
            "request, so every request makes a new lead, durably committed "
            "(WAL, synchronous=FULL). "
            f"Medians of {args.rounds} alternating rounds.",
            "",
            "| server | req/s | p50 ms | p99 ms | errors + non-2xx |",
            "|---|---|---|---|---|",
            table,
            "",
            f"**Ratio leadgate / bare aiohttp: {ratio:.2f}** (target 0.60: "
            f"{'met' if ratio >= 0.6 else 'not met'}). leadgate p99 {gate_p99:.1f} ms "
            f"(target under 25 ms: {'met' if gate_p99 < 25 else 'not met'}).",
            "",
            f"Leads in the databases after the runs: {num(stored)}; requests wrk counted as "
            f"answered: about {num(acknowledged)} (a few more may be answered as wrk stops).",
            END_MARK,
        ]
    )
    print("\n" + section)
    if args.write:
        write_section(section)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def write_section(section: str) -> None:
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Benchmarks\n\n"
    # Only the generated block is replaced: the analysis written below it stays.
    pattern = re.compile(r"## Forms hot path\n.*?" + re.escape(END_MARK), re.S)
    text = (
        pattern.sub(lambda _: section.rstrip("\n"), text)
        if pattern.search(text)
        else (text.rstrip("\n") + "\n\n" + section)
    )
    DOC.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
