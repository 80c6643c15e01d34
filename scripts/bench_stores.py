#!/usr/bin/env python3
"""Forms hot path by store: SQLite, Redis, and one vs two replicas on Redis, in one run.

    .venv/bin/python scripts/bench_stores.py [--seconds 10] [--connections 32] [--rounds 3]
                                               [--write]

The same load as scripts/bench.py (wrk posts `/v1/forms/site`, a distinct person per
request, every request a new lead, 2xx tallied exactly and every acknowledged lead looked
up in the store afterwards) against four set-ups, each on fresh data, rotated per round:

- sqlite: one `leadgate serve` on its embedded store (WAL, synchronous=FULL, group commit);
- redis: one `leadgate serve` on a redis-server of the run's own with `appendonly yes`,
  `appendfsync always` (every acknowledged write is on disk: the gateway refuses to start
  otherwise);
- redis, 1 replica behind haproxy: the same behind HAProxy (TCP, round robin), the
  load balancer's own cost;
- redis, 2 replicas behind haproxy: two gateways sharing that Redis behind HAProxy.

Reported per set-up: req/s, p50/p99, and CPU µs per request of the gateway processes
(summed over replicas) and of redis-server: on a machine with few cores, a second replica
competes with Redis, HAProxy and wrk for the same cores, and CPU per request shows where
the time went. Needs wrk, redis-server and haproxy (Debian packages of those names).
With --write the block between the markers in docs/benchmarks.md is replaced.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import (
    EXEMPT,
    WRK_SCRIPT,
    Tally,
    commit,
    cpu_seconds,
    free_port,
    leads_in,
    load,
    machine,
    num,
    run_wrk,
    stop,
    wait_ready,
    write_block,
)

BEGIN_MARK = "<!-- begin scripts/bench_stores.py output -->"
END_MARK = "<!-- end scripts/bench_stores.py output -->"

SELLERS = """
[[sellers]]
id = "anna"
name = "Анна"
[[sellers]]
id = "boris"
name = "Борис"
"""


@dataclass(frozen=True)
class Setup:
    name: str
    store: str  # "sqlite" | "redis"
    replicas: int
    balanced: bool


SETUPS = (
    Setup("sqlite", "sqlite", 1, False),
    Setup("redis", "redis", 1, False),
    Setup("redis, 1 replica behind haproxy", "redis", 1, True),
    Setup("redis, 2 replicas behind haproxy", "redis", 2, True),
)


def start_redis(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    directory = work / f"redis-{port}"
    directory.mkdir()
    proc = subprocess.Popen(
        [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
            "--logfile", str(directory / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while subprocess.run(
        ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True
    ).stdout.strip() != "PONG":
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    return proc, port


def start_haproxy(work: Path, backends: list[int]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    servers = "\n".join(f"  server r{i} 127.0.0.1:{p}" for i, p in enumerate(backends))
    config = work / f"haproxy-{port}.cfg"
    config.write_text(
        f"""global
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend front
  bind 127.0.0.1:{port}
  default_backend replicas
backend replicas
  balance roundrobin
{servers}
""",
        encoding="utf-8",
    )
    proc = subprocess.Popen(["haproxy", "-f", str(config)], stdout=subprocess.DEVNULL)
    return proc, port


def gateway_config(work: Path, setup: Setup, no: int, redis_port: int | None) -> Path:
    config = work / f"{setup.store}-{setup.replicas}-{setup.balanced}-{no}.toml"
    if setup.store == "sqlite":
        store = f'[store]\npath = "{config.with_suffix(".db")}"\n'
    else:
        store = (
            f'[store]\nkind = "redis"\nurl = "redis://127.0.0.1:{redis_port}/0"\n'
            f'prefix = "bench{no}:"\n'
        )
    config.write_text(
        store + f'[ratelimit]\nexempt = ["{EXEMPT}"]\n' + SELLERS, encoding="utf-8"
    )
    return config


async def redis_leads(config: Path) -> set[str]:
    """Every lead id in a Redis store, through the Store protocol."""
    from gateway.config import load_settings
    from gateway.store.base import LeadQuery
    from gateway.web import make_store

    store = make_store(load_settings(config))
    await store.open()
    try:
        ids: set[str] = set()
        query = LeadQuery(limit=1000)
        while True:
            page = await store.list_leads(query)
            ids.update(lead.id for lead in page)
            if len(page) < query.limit:
                return ids
            query = LeadQuery(limit=1000, before_id=page[-1].id)
    finally:
        await store.close()


def one_round(setup: Setup, args: argparse.Namespace, work: Path, no: int, tally: Tally) -> float:
    """Run one set-up under wrk; returns redis-server's CPU µs per request (0 for SQLite)."""
    procs: list[subprocess.Popen[bytes]] = []
    redis_proc = None
    redis_port = None
    try:
        if setup.store == "redis":
            redis_proc, redis_port = start_redis(work)
        config = gateway_config(work, setup, no, redis_port)
        ports = []
        for r in range(setup.replicas):
            port = free_port()
            log = (work / f"{config.stem}-r{r}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "gateway.cli", "-c", str(config), "serve",
                     "--port", str(port)],
                    cwd=work, stdout=log, stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
            wait_ready(port, procs[-1])
            ports.append(port)
        target = ports[0]
        haproxy = None
        if setup.balanced:
            haproxy, target = start_haproxy(work, ports)
            wait_ready(target, procs[0])
        gateways = [p.pid for p in procs]
        cpu_before = sum(cpu_seconds(pid) for pid in gateways)
        redis_before = cpu_seconds(redis_proc.pid) if redis_proc else 0.0
        result = run_wrk(target, args.seconds, args.connections, work / "post.lua", "lead_id", work)
        done = max(1, result.ok + result.refused)
        result.cpu_us = (sum(cpu_seconds(pid) for pid in gateways) - cpu_before) / done * 1e6
        redis_us = (cpu_seconds(redis_proc.pid) - redis_before) / done * 1e6 if redis_proc else 0.0
        if haproxy is not None:
            stop(haproxy)
        for proc in procs:
            stop(proc)
        procs.clear()
        stored = (
            leads_in(config.with_suffix(".db"))
            if setup.store == "sqlite"
            else asyncio.run(redis_leads(config))
        )
    finally:
        for proc in procs:
            stop(proc)
        if redis_proc is not None:
            # The check above reads the store before the server goes.
            stop(redis_proc)
    tally.results.append(result)
    tally.acknowledged += result.ok
    tally.stored += len(stored)
    missing = [i for i in result.acked if i not in stored]
    tally.missing += len(missing)
    if missing:
        print(f"  {setup.name}: {len(missing)} acknowledged leads NOT stored", file=sys.stderr)
    print(
        f"round {no + 1} {setup.name}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
        f"p99 {result.p99_ms:.2f} ms, gateway CPU {result.cpu_us:.0f} us/request, "
        f"redis CPU {redis_us:.0f} us/request, 2xx {result.ok}, other {result.refused}",
        flush=True,
    )
    return redis_us


def report(
    args: argparse.Namespace,
    tallies: dict[str, Tally],
    redis_cpu: dict[str, list[float]],
    started: str,
    before: str,
) -> str:
    rows = []
    for setup in SETUPS:
        t = tallies[setup.name]
        r = sorted(redis_cpu[setup.name])
        redis_us = f"{r[len(r) // 2]:.0f}" if setup.store == "redis" else "—"
        rows.append(
            f"| {setup.name} | {num(t.median('rps'))} | {t.median('p50_ms'):.2f} | "
            f"{t.median('p99_ms'):.2f} | {t.median('cpu_us'):.0f} | {redis_us} | "
            f"{num(t.acknowledged)} | {num(t.missing)} |"
        )
    sqlite, redis = (tallies[n].median("rps") for n in ("sqlite", "redis"))
    one, two = (
        tallies[n].median("rps")
        for n in ("redis, 1 replica behind haproxy", "redis, 2 replicas behind haproxy")
    )
    return "\n".join(
        [
            BEGIN_MARK,
            f"Generated by `scripts/bench_stores.py --seconds {args.seconds} --connections "
            f"{args.connections} --rounds {args.rounds}` at commit {commit()}, {started}; "
            f"{machine()}; Python {sys.version.split()[0]}; {before} before the run. "
            "wrk (1 thread), Redis, HAProxy and the gateways all share this machine's cores. "
            f"Medians of {args.rounds} rounds.",
            "",
            "| set-up | req/s | p50 ms | p99 ms | gateway CPU µs per request (all replicas) | "
            "redis-server CPU µs per request | 2xx counted | acknowledged but missing |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Redis / SQLite: {redis / sqlite:.2f}; two replicas / one (both behind "
            f"HAProxy): {two / one:.2f}.",
            END_MARK,
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    for tool, package in (("wrk", "wrk"), ("redis-server", "redis-server"), ("haproxy", "haproxy")):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"bench_stores: {tool} is missing: apt-get install {package}")

    started = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    before = load()
    work = Path(tempfile.mkdtemp(prefix="leadgate-bench-stores-"))
    (work / "post.lua").write_text(WRK_SCRIPT, encoding="utf-8")
    tallies = {s.name: Tally() for s in SETUPS}
    redis_cpu: dict[str, list[float]] = {s.name: [] for s in SETUPS}
    try:
        for no in range(args.rounds):
            order = SETUPS[no % len(SETUPS) :] + SETUPS[: no % len(SETUPS)]
            for setup in order:
                redis_cpu[setup.name].append(one_round(setup, args, work, no, tallies[setup.name]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    block = report(args, tallies, redis_cpu, started, before)
    print("\n" + block)
    if args.write:
        write_block(block, "## SQLite and Redis, one and two replicas", BEGIN_MARK, END_MARK)
    return 1 if any(t.missing for t in tallies.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
