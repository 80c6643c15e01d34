#!/usr/bin/env python3
"""Forms hot path: bare aiohttp, the durable floor and leadgate, in the same run.

    .venv/bin/python scripts/bench.py [--seconds 10] [--connections 32] [--rounds 3] [--write]

Three single-process servers on 127.0.0.1, each with a fresh database, take the same load:
- bare aiohttp (scripts/bare_aiohttp.py): read the body, parse the JSON, answer. No storage.
- the durable floor (scripts/durable_floor.py): parse the JSON, append the body to SQLite
  (WAL, synchronous=FULL, group commit), answer after the fsync. The fair baseline: the
  least any server must do for its 2xx to mean "stored".
- leadgate: a real `leadgate serve` process, its own SQLite store (WAL, synchronous=FULL,
  group commit), with `[ratelimit] exempt = ["127.0.0.0/8"]` so the load generator is not
  throttled as one client (the only setting changed from the defaults).

wrk (Debian package `wrk`) posts the site form, a distinct person per request (a new
phone number), so every request makes a new lead: no replays, no merges. A Lua script
counts the answers per status exactly and keeps the lead id of every 2xx; after each
leadgate round every acknowledged lead id is looked up in the store (a 2xx whose lead is
missing is a durability bug and fails the run). Rounds rotate the three servers so
machine noise hits all alike; the median round counts. With --write the generated block
replaces the one between the markers in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN_MARK = "<!-- begin scripts/bench.py output -->"
END_MARK = "<!-- end scripts/bench.py output -->"
EXEMPT = "127.0.0.0/8"

CONFIG = f"""
[store]
path = "{{db}}"
[ratelimit]
# The load generator is one client on 127.0.0.1: exempt, or it is (rightly) throttled.
exempt = ["{EXEMPT}"]
[[sellers]]
id = "anna"
name = "Анна"
[[sellers]]
id = "boris"
name = "Борис"
"""

# Each wrk thread numbers its own people under its own operator code, so no two requests
# of a run share a phone (10 million per thread). response() tallies every answer by
# status and keeps the id a 2xx acknowledged (ACK_FIELD of the JSON body); done() writes
# the tallies and ids to ACK_FILE for bench.py to check.
WRK_SCRIPT = r"""
local codes = {"916", "915", "926", "925", "903", "905", "909", "919"}
local threads = {}
local ack_field = os.getenv("ACK_FIELD")
local ack_file = os.getenv("ACK_FILE")

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  statuses = {}
  acked = {}
  code = codes[tid]
end

request = function()
  counter = counter + 1
  local phone = string.format("+7%s%07d", code, counter)
  local body = '{"name":"Покупатель ' .. counter .. '","phone":"' .. phone ..
    '","equipment_type":"Мелкое","comment":"нужен прайс"}'
  return wrk.format("POST", "/v1/forms/site", {["Content-Type"] = "application/json"}, body)
end

response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status >= 200 and status < 300 and ack_field then
    local id = string.match(body, '"' .. ack_field .. '":"?([%w]+)')
    acked[#acked + 1] = id or "?"
  end
end

done = function(summary, latency, requests)
  local out = assert(io.open(ack_file, "w"))
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      out:write("status ", status, " ", count, "\n")
    end
    for _, id in ipairs(thread:get("acked")) do
      out:write("ack ", id, "\n")
    end
  end
  out:close()
end
"""


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    socket_errors: int
    statuses: dict[int, int]
    acked: list[str] = field(default_factory=list)
    cpu_us: float = 0.0  # the server's CPU time (all its threads) per completed request

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.statuses.items() if 200 <= s < 300)

    @property
    def refused(self) -> int:
        return sum(n for s, n in self.statuses.items() if not 200 <= s < 300)


@dataclass(frozen=True)
class Server:
    name: str
    ack_field: str | None  # the receipt's id field, to check against the store
    command: Callable[[int, Path], list[str]]
    stored: Callable[[Path], set[str]] | None  # ids in the store after the round


def leads_in(db: Path) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM leads")}


def bodies_in(db: Path) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {str(row[0]) for row in conn.execute("SELECT id FROM bodies")}


def leadgate_command(port: int, db: Path) -> list[str]:
    config = db.with_suffix(".toml")
    config.write_text(CONFIG.format(db=db), encoding="utf-8")
    return [sys.executable, "-m", "gateway.cli", "-c", str(config), "serve", "--port", str(port)]


SERVERS = (
    Server(
        "bare aiohttp",
        None,
        lambda port, _db: [sys.executable, str(ROOT / "scripts" / "bare_aiohttp.py"), str(port)],
        None,
    ),
    Server(
        "durable floor",
        "id",
        lambda port, db: [
            sys.executable,
            str(ROOT / "scripts" / "durable_floor.py"),
            str(port),
            str(db),
        ],
        bodies_in,
    ),
    Server("leadgate", "lead_id", leadgate_command, leads_in),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(
    port: int, seconds: int, connections: int, script: Path, ack_field: str | None, work: Path
) -> Result:
    ack_file = work / "acked.txt"
    env = {**os.environ, "ACK_FILE": str(ack_file)}
    if ack_field:
        env["ACK_FIELD"] = ack_field
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
        env=env,
    ).stdout

    def grab(pattern: str) -> str:
        found = re.search(pattern, out, re.M)
        if found is None:
            raise RuntimeError(f"wrk output without {pattern!r}:\n{out}")
        return found.group(1)

    err = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    statuses: dict[int, int] = {}
    acked: list[str] = []
    for line in ack_file.read_text().splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "status":
            status, count = rest.split()
            statuses[int(status)] = statuses.get(int(status), 0) + int(count)
        else:
            acked.append(rest)
    return Result(
        rps=float(grab(r"Requests/sec:\s+([\d.]+)")),
        p50_ms=to_ms(grab(r"^\s+50%\s+(\S+)")),
        p99_ms=to_ms(grab(r"^\s+99%\s+(\S+)")),
        socket_errors=sum(int(g) for g in err.groups()) if err else 0,
        statuses=statuses,
        acked=acked,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Tally:
    results: list[Result] = field(default_factory=list)
    acknowledged: int = 0
    stored: int = 0
    missing: int = 0

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in self.results))


def one_round(server: Server, args: argparse.Namespace, work: Path, no: int, tally: Tally) -> None:
    port = free_port()
    db = work / f"{server.name.replace(' ', '_')}-{no}.db"
    log = (work / f"{db.stem}.log").open("wb")
    proc = subprocess.Popen(
        server.command(port, db), cwd=work, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_ready(port, proc)
        cpu_before = cpu_seconds(proc.pid)
        result = run_wrk(
            port, args.seconds, args.connections, work / "post.lua", server.ack_field, work
        )
        # CPU per request hardly depends on what else runs on the machine (req/s does).
        cpu = cpu_seconds(proc.pid) - cpu_before
        result.cpu_us = cpu / max(1, result.ok + result.refused) * 1e6
    finally:
        stop(proc)
        log.close()
    tally.results.append(result)
    tally.acknowledged += result.ok
    if server.stored is not None:
        stored = server.stored(db)
        tally.stored += len(stored)
        missing = [i for i in result.acked if i not in stored]
        tally.missing += len(missing)
        if missing:
            print(
                f"  {server.name}: {len(missing)} acknowledged ids NOT in the store, "
                f"e.g. {missing[:3]}",
                file=sys.stderr,
            )
    print(
        f"round {no + 1} {server.name}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
        f"p99 {result.p99_ms:.2f} ms, CPU {result.cpu_us:.0f} us/request, 2xx {result.ok}, "
        f"other {result.refused}, "
        f"socket errors {result.socket_errors}",
        flush=True,
    )


def machine() -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({model}), {platform.machine()}, Linux {platform.release()}"


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    head = git("rev-parse", "--short=10", "HEAD").strip() or "unknown"
    # The files the benchmark scripts write themselves do not make a run "uncommitted".
    outputs = (":!docs/benchmarks.md", ":!docs/img/hot-path-flame.svg")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", *outputs).strip()
    return head + (" (with uncommitted changes)" if dirty else "")


def load() -> str:
    try:
        return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "load average unknown"


def num(value: float) -> str:
    return f"{value:,.0f}".replace(",", "\u202f")


def report(args: argparse.Namespace, tallies: dict[str, Tally], started: str, before: str) -> str:
    rows = []
    for name, t in tallies.items():
        checked = f"{num(t.missing)} of {num(t.acknowledged)}" if name != "bare aiohttp" else "—"
        rows.append(
            f"| {name} | {num(t.median('rps'))} | {t.median('p50_ms'):.2f} | "
            f"{t.median('p99_ms'):.2f} | {t.median('cpu_us'):.0f} | {num(t.acknowledged)} | "
            f"{num(sum(r.refused + r.socket_errors for r in t.results))} | {checked} |"
        )
    gate, floor, bare = (
        tallies[n].median("rps") for n in ("leadgate", "durable floor", "bare aiohttp")
    )
    to_floor, to_bare = gate / floor, gate / bare
    p99 = tallies["leadgate"].median("p99_ms")
    cpu_floor = tallies["durable floor"].median("cpu_us") / tallies["leadgate"].median("cpu_us")
    return "\n".join(
        [
            BEGIN_MARK,
            f"Generated by `scripts/bench.py --seconds {args.seconds} --connections "
            f"{args.connections} --rounds {args.rounds}` at commit {commit()}, {started}; "
            f"{machine()}; Python {platform.python_version()}; {before} before the run. "
            f"wrk, 1 thread, {args.connections} connections, posts `/v1/forms/site` with a "
            "distinct person per request (every request makes a new lead). Medians of "
            f"{args.rounds} rounds, the three servers in turn. leadgate runs with "
            f'`[ratelimit] exempt = ["{EXEMPT}"]` (the load generator is one client).',
            "",
            "| server | req/s | p50 ms | p99 ms | server CPU µs per request | "
            "2xx counted (all rounds) | not 2xx + socket errors | "
            "acknowledged but missing from the store |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"**leadgate / durable floor: {to_floor:.2f}** (target 0.50: "
            f"{'met' if to_floor >= 0.5 else 'not met'}); leadgate / bare aiohttp: "
            f"{to_bare:.2f}; leadgate p99 {p99:.1f} ms (target under 25 ms: "
            f"{'met' if p99 < 25 else 'not met'}). By CPU per request, which depends far "
            "less on what else the machine runs: leadgate / durable floor "
            f"{cpu_floor:.2f}.",
            END_MARK,
        ]
    )


def write_block(block: str, heading: str, begin: str = BEGIN_MARK, end: str = END_MARK) -> None:
    """Replace the block between `begin` and `end` in docs/benchmarks.md (the text around
    it stays); without the markers, append it under `heading`."""
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n" + block + "\n"
    DOC.write_text(text, encoding="utf-8")
    print(f"written to {DOC}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is missing; it is the Debian package wrk: apt-get install wrk")

    started = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    before = load()
    work = Path(tempfile.mkdtemp(prefix="leadgate-bench-"))
    (work / "post.lua").write_text(WRK_SCRIPT, encoding="utf-8")
    tallies = {server.name: Tally() for server in SERVERS}
    try:
        for no in range(args.rounds):
            # Rotate who goes first, so a noisy minute does not always hit the same server.
            order = SERVERS[no % 3 :] + SERVERS[: no % 3]
            for server in order:
                one_round(server, args, work, no, tallies[server.name])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    block = report(args, tallies, started, before)
    print("\n" + block)
    if args.write:
        write_block(block, "## Forms hot path")
    missing = sum(t.missing for t in tallies.values())
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
