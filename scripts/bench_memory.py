#!/usr/bin/env python3
"""Memory: leadgate's RSS with a million leads in its store and after a flood of distinct
clients, each with its own IP and idempotency key.

    .venv/bin/python scripts/bench_memory.py [--leads 1000000] [--clients 300000] [--write]

1. The store is filled with --leads leads through leadgate's own path (the site form's
   parser and Pipeline.accept, in this process, group commit as in the server), each a
   distinct person: what a store looks like after years of leads.
2. `leadgate serve` opens that store (a subprocess; nothing else is configured but
   `[server] trusted_proxies = ["127.0.0.1"]`, so X-Forwarded-For names the client). Its
   RSS (VmRSS from /proc) is read after start and after a short warm-up.
3. wrk posts the site form with a new client IP (X-Forwarded-For), a new Idempotency-Key
   and a new person on every request, in --steps equal steps up to --clients requests; the
   RSS is read after each. The rate limiter keeps a bucket per client IP and the store's
   overlays keep replay keys while they commit: both must stay bounded, so the RSS must
   level off, not grow with the clients. 300,000 distinct clients is an hour at 83
   requests a second from clients never seen before, three times the rate limiter's bound
   of 100,000 remembered clients.
With --write the block between the markers in docs/benchmarks.md is replaced.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN_MARK = "<!-- begin scripts/bench_memory.py output -->"
END_MARK = "<!-- end scripts/bench_memory.py output -->"
sys.path.insert(0, str(ROOT / "scripts"))

from bench import commit, free_port, load, machine, wait_ready, write_block  # noqa: E402

CONFIG = """
[store]
path = "{db}"
[server]
trusted_proxies = ["127.0.0.1"]
[[sellers]]
id = "anna"
name = "Анна"
[[sellers]]
id = "boris"
name = "Борис"
"""

# Every request: a client IP never seen (10.a.b.c from the counter, FIRST onwards), a new
# idempotency key and a new person.
WRK_SCRIPT = r"""
local first = tonumber(os.getenv("FIRST"))
local counter = first

request = function()
  local n = counter
  counter = counter + 1
  local ip = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256,
    math.floor(n / 256) % 256, n % 256)
  local phone = string.format("+7916%07d", n % 10000000)
  local body = '{"name":"Клиент ' .. n .. '","phone":"' .. phone .. '","comment":"память"}'
  return wrk.format("POST", "/v1/forms/site", {
    ["Content-Type"] = "application/json",
    ["X-Forwarded-For"] = ip,
    ["Idempotency-Key"] = "mem-" .. n,
  }, body)
end

response = function(status, headers, body)
  if status ~= 201 then
    io.stderr:write("status " .. status .. ": " .. body .. "\n")
  end
end
"""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def leads_in(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM leads").fetchone()[0])


async def fill(db: Path, config: Path, leads: int) -> float:
    """Leads through the form parser and Pipeline.accept, 64 at a time (group commit)."""
    from aiohttp import web

    from connectors.webform import parse_submission
    from gateway.config import load_settings
    from gateway.keys import PIPELINE
    from gateway.web import create_app

    settings = load_settings(config)
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    pipeline = app[PIPELINE]
    form = settings.forms["site"]
    start = time.monotonic()
    have = leads_in(db)
    next_n = have

    async def one_worker() -> None:
        nonlocal next_n
        while next_n < leads:
            n = next_n
            next_n += 1
            data = {"name": f"Старый клиент {n}", "phone": f"+7903{n:07d}", "comment": "архив"}
            event = parse_submission("site", form, data, received_at=datetime.now(UTC))
            await pipeline.accept(event)
            if n % 100_000 == 0 and n:
                print(f"  filled {n:,} leads", flush=True)

    try:
        await asyncio.gather(*(one_worker() for _ in range(64)))
    finally:
        await runner.cleanup()
    return time.monotonic() - start


def flood(port: int, first: int, seconds: int, script: Path) -> tuple[int, str]:
    """Run wrk for `seconds`; return the requests it completed and what was not a 201."""
    env = {**os.environ, "FIRST": str(first)}
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{seconds}s", "-s", str(script), f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    found = re.search(r"(\d+) requests in", out.stdout)
    if found is None:
        raise RuntimeError(f"wrk printed no request count:\n{out.stdout}")
    refused = out.stderr.strip().splitlines()
    return int(found.group(1)), (f"{len(refused)} not 201, e.g. {refused[0]}" if refused else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=300_000)
    parser.add_argument("--step-seconds", type=int, default=30, help="flood between readings")
    parser.add_argument("--db", type=Path, help="keep (and reuse) the filled store here")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench_memory: wrk is missing; it is the Debian package wrk: apt-get install wrk")

    work = Path(tempfile.mkdtemp(prefix="leadgate-mem-"))
    db = args.db or work / "leadgate.db"
    config = work / "leadgate.toml"
    config.write_text(CONFIG.format(db=db), encoding="utf-8")
    script = work / "flood.lua"
    script.write_text(WRK_SCRIPT, encoding="utf-8")
    started = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    rows: list[tuple[str, int, int, float]] = []
    try:
        seconds = asyncio.run(fill(db, config, args.leads))
        print(f"store filled: {leads_in(db):,} leads ({seconds:.0f} s)", flush=True)
        port = free_port()
        log = (work / "serve.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "-c", str(config), "serve", "--port", str(port)],
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        problems: list[str] = []
        try:
            wait_ready(port, proc, timeout=120)
            rows.append(("started", 0, leads_in(db), rss_mib(proc.pid)))
            done = 0
            # People, client IPs and keys numbered on from the store's size: a rerun on a
            # kept store (--db) floods with new ones too, not replays of the last run's.
            offset = leads_in(db)
            while done < args.clients:
                completed, refused = flood(port, offset, args.step_seconds, script)
                if refused:
                    problems.append(refused)
                done += completed
                # Requests in flight when wrk stops were sent but not counted: a margin
                # keeps the next step's clients new.
                offset += completed + 64
                rows.append((f"flood step {len(rows)}", done, leads_in(db), rss_mib(proc.pid)))
                print(f"  {rows[-1]}", flush=True)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
            log.close()
    finally:
        if args.db is None:
            shutil.rmtree(work, ignore_errors=True)
    table = "\n".join(
        f"| {what} | {num(clients)} | {num(leads)} | {rss:.0f} |"
        for what, clients, leads, rss in rows
    )
    growth = rows[-1][3] - rows[len(rows) // 2][3]
    block = "\n".join(
        [
            BEGIN_MARK,
            f"Generated by `scripts/bench_memory.py --leads {args.leads} --clients "
            f"{args.clients} --step-seconds {args.step_seconds}` at commit {commit()}, {started}; "
            f"{machine()}; Python {platform.python_version()}; {load()} after the run. "
            "The store filled through the form parser and Pipeline.accept; then `leadgate "
            "serve` on it, flooded by wrk (32 connections), every request a new client IP "
            "(X-Forwarded-For from a trusted proxy), a new Idempotency-Key and a new person.",
            "",
            "| moment | distinct clients so far | leads in the store | leadgate RSS MiB |",
            "|---|---|---|---|",
            table,
            "",
            f"RSS change over the second half of the flood: {growth:+.0f} MiB. "
            + (
                "Requests not answered 201: " + "; ".join(problems)
                if problems
                else "Every request was answered 201."
            ),
            END_MARK,
        ]
    )
    print("\n" + block)
    if args.write:
        write_block(block, "## Memory", BEGIN_MARK, END_MARK)
    return 0


def num(value: float) -> str:
    return f"{value:,.0f}".replace(",", "\u202f")


if __name__ == "__main__":
    sys.exit(main())
