#!/usr/bin/env python3
"""Where a form post's time goes, in leadgate and in the durable floor: py-spy samples.

    .venv/bin/python scripts/profile_hot_path.py [--seconds 15] [--write]

Starts the durable floor, then `leadgate serve`, as bench.py does (fresh stores, leadgate's
rate limit exempt for 127.0.0.0/8), loads each with wrk and bench.py's Lua script (32
connections, a new person per request) and samples its main thread with py-spy (`pip
install py-spy`; it needs ptrace rights: root or CAP_SYS_PTRACE). Each part of a request
gets its µs per request: its share of the samples times the main thread's CPU time per
answered request. With --write the table replaces the block between the markers in
docs/benchmarks.md and leadgate's flame graph goes to docs/img/hot-path-flame.svg.
"""

from __future__ import annotations

import argparse
import html
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from bench import (  # noqa: E402
    SERVERS,
    WRK_SCRIPT,
    Server,
    commit,
    free_port,
    load,
    machine,
    wait_ready,
    write_block,
)

SVG = ROOT / "docs" / "img" / "hot-path-flame.svg"
BEGIN_MARK = "<!-- begin scripts/profile_hot_path.py output -->"
END_MARK = "<!-- end scripts/profile_hot_path.py output -->"

# Innermost match wins: a frame is charged to the most specific part it runs in. Each part
# is (label, a pattern on "function (file:line)" frames).
PARTS: list[tuple[str, re.Pattern[str]]] = [
    (label, re.compile(pattern))
    for label, pattern in [
        ("waiting for events (epoll)", r"select \(selectors\.py"),
        (
            "HTTP: aiohttp reads and parses requests",
            r"aiohttp/(web_protocol|http_parser|streams|web_request|_http_parser)",
        ),
        (
            "HTTP: aiohttp writes responses",
            r"aiohttp/(http_writer|web_response)|_SelectorSocketTransport\.write",
        ),
        ("gateway HTTP layer (middleware, JSON body, receipt)", r"gateway/(web|http|serving)\.py"),
        ("form: fields and validation", r"connectors/webform\.py"),
        ("phone numbers (phonenumbers)", r"gateway/identity\.py|phonenumbers/"),
        ("pydantic models (validation, dumps)", r"pydantic|models\.py"),
        ("ids (ULID)", r"ulid/|new_id"),
        (
            "pipeline: calendar, screen, planner",
            r"gateway/(pipeline|calendar|screen|assign|rawpayload)\.py",
        ),
        (
            "store: commit loop (inserts, settle)",
            r"_commit_loop|_begin|_write \(gateway/store|_apply|_many|_settle",
        ),
        (
            "store: match, decide, build rows",
            r"gateway/store/sqlite(_match|_queries)?\.py:",
        ),
        ("metrics, logging", r"prometheus_client|gateway/metrics\.py|logging/"),
        ("asyncio event loop itself", r"asyncio/"),
    ]
]


def part_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for label, pattern in PARTS:
            if pattern.search(frame):
                return label
    return "other"


@dataclass
class Profile:
    samples: Counter[str]
    us_per_request: float  # the main thread's CPU per answered request, under the profiler
    rps: str


def profile(server: Server, args: argparse.Namespace, py_spy: str, work: Path) -> Profile:
    """Load one server with wrk and sample its main thread; the raw stacks stay in work."""
    port = free_port()
    log = (work / f"{server.name}.log").open("wb")
    db = work / f"{server.name.replace(' ', '_')}.db"
    proc = subprocess.Popen(server.command(port, db), cwd=work, stdout=log, stderr=log)
    raw = work / f"{server.name}.txt"
    try:
        wait_ready(port, proc)
        acks = work / "acked.txt"
        env = {**os.environ, "ACK_FILE": str(acks)}
        seconds = args.seconds + 3
        load_gen = subprocess.Popen(
            ["wrk", "-t1", f"-c{args.connections}", f"-d{seconds}s", "-s",
             str(work / "post.lua"), f"http://127.0.0.1:{port}"],
            stdout=subprocess.PIPE, env=env, text=True,
        )  # fmt: skip
        cpu_before = thread_cpu(proc.pid)
        time.sleep(1)  # past the first connections
        # --nonblocking: the server is not paused to be sampled, so its pace stays its own.
        common = ["record", "-p", str(proc.pid), "-d", str(args.seconds), "-r", "250"]
        subprocess.run([py_spy, *common, "--nonblocking", "-f", "raw", "-o", str(raw)],
                       check=True, capture_output=True)  # fmt: skip
        out, _ = load_gen.communicate()
        cpu = thread_cpu(proc.pid) - cpu_before
        answered = sum(
            int(line.split()[2])
            for line in acks.read_text().splitlines()
            if line.startswith("status ")
        )
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out or "")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        log.close()
    samples: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        # The main thread only: the fsync thread waits in COMMIT with the GIL released.
        if any("run_forever" in f for f in frames):
            samples[part_of(frames)] += int(count)
    return Profile(samples, cpu / max(1, answered) * 1e6, rps.group(1) if rps else "?")


def thread_cpu(pid: int) -> float:
    """CPU seconds of a process's main thread (its tid is its pid)."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        sys.exit("profile: py-spy is missing: .venv/bin/pip install py-spy")
    if shutil.which("wrk") is None:
        sys.exit("profile: wrk is missing; it is the Debian package wrk: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="leadgate-profile-"))
    started = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    servers = {server.name: server for server in SERVERS}
    try:
        (work / "post.lua").write_text(WRK_SCRIPT, encoding="utf-8")
        floor = profile(servers["durable floor"], args, py_spy, work)
        gate = profile(servers["leadgate"], args, py_spy, work)
        if args.write:  # the flame graph goes with the table it illustrates
            render_svg(work / "leadgate.txt")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def us(p: Profile, label: str) -> float:
        return p.samples[label] / max(1, sum(p.samples.values())) * p.us_per_request

    server_parts = ("HTTP: aiohttp", "asyncio event loop", "waiting for events")
    own = sum(us(gate, k) for k in gate.samples if not k.startswith(server_parts))
    labels = sorted(set(gate.samples) | set(floor.samples), key=lambda k: -us(gate, k))
    rows = "\n".join(
        f"| {label} | {us(gate, label):.0f} | {us(floor, label):.0f} |" for label in labels
    )
    block = "\n".join(
        [
            BEGIN_MARK,
            f"Generated by `scripts/profile_hot_path.py --seconds {args.seconds}` at commit "
            f"{commit()}, {started}; {machine()}; Python {platform.python_version()}; "
            f"{load()} after the run. Each server in turn under wrk ({args.connections} "
            "connections, a new person per request, as bench.py); py-spy sampled its main "
            f"thread 250 times a second for {args.seconds} s without pausing it. A sample "
            "is charged to the innermost part it was in; a part's share of the samples times "
            "the main thread's CPU time per answered request (from /proc) gives its µs per "
            f"request. Under the profiler: leadgate {gate.rps} req/s, the floor {floor.rps} "
            "req/s. Flame graph of leadgate: [img/hot-path-flame.svg](img/hot-path-flame.svg).",
            "",
            "| part of the request | leadgate µs per request | durable floor µs per request |",
            "|---|---|---|",
            rows,
            f"| **main thread, all** | **{gate.us_per_request:.0f}** | "
            f"**{floor.us_per_request:.0f}** |",
            "",
            f"leadgate's own parts (all but aiohttp, asyncio and epoll): {own:.0f} µs per "
            f"request, {own / floor.us_per_request:.1f} times the floor's whole request.",
            END_MARK,
        ]
    )
    print(block)
    if args.write:
        write_block(block, "### Where the time goes", BEGIN_MARK, END_MARK)
    return 0


def render_svg(raw: Path) -> None:
    """The flame graph of the same samples: a plain SVG, widest stacks at the bottom, the
    share of samples in each frame's tooltip (py-spy renders SVG only while it records)."""
    stacks = raw.read_text()
    # File paths of this machine say nothing to a reader: keep them relative.
    stacks = re.sub(r"/[^ ;()]*/(site-packages|lib/python3\.\d+)/", "", stacks)
    stacks = stacks.replace(str(ROOT) + "/", "")
    root = _Node()
    for line in stacks.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        node = root
        node.n += int(count)
        for frame in stack.split(";"):
            node = node.kids.setdefault(frame, _Node())
            node.n += int(count)
    width, row = 1600, 16
    rows = root.depth()
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{rows * row + 4}" '
        'font-family="monospace" font-size="10">'
    ]

    def draw(node: _Node, name: str, x: float, level: int) -> None:
        w = node.n / root.n * width
        if w < 0.5:
            return
        y = (rows - level - 1) * row
        label = html.escape(name)
        hue = 10 + sum(map(ord, name)) % 45
        out.append(
            f"<g><title>{label} ({node.n / root.n * 100:.1f} %)</title>"
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" '
            f'fill="hsl({hue},85%,62%)"/>'
        )
        if w > 40:
            out.append(f'<text x="{x + 2:.1f}" y="{y + 11}">{label[: int(w / 6)]}</text>')
        out.append("</g>")
        for kid_name, kid in sorted(node.kids.items()):
            draw(kid, kid_name, x, level + 1)
            x += kid.n / root.n * width

    draw(root, "all samples", 0.0, 0)
    out.append("</svg>")
    SVG.parent.mkdir(parents=True, exist_ok=True)
    SVG.write_text("\n".join(out) + "\n", encoding="utf-8")


@dataclass
class _Node:
    n: int = 0
    kids: dict[str, _Node] = field(default_factory=dict)

    def depth(self) -> int:
        return 1 + max((kid.depth() for kid in self.kids.values()), default=0)


if __name__ == "__main__":
    sys.exit(main())
