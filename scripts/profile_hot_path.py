#!/usr/bin/env python3
"""Where a form post's time goes in `leadgate serve`: py-spy samples under bench.py's load.

    .venv/bin/python scripts/profile_hot_path.py [--seconds 15] [--write]

Starts `leadgate serve` as bench.py does (fresh store, rate limit exempt for 127.0.0.0/8),
loads it with wrk and bench.py's Lua script (32 connections, a new person per request) and
samples its main thread with py-spy (`pip install py-spy`; it needs ptrace rights, root or
CAP_SYS_PTRACE). Writes the flame graph to docs/img/hot-path-flame.svg and prints the share
of the main thread's samples each part of the request takes (a frame counts for the
innermost part it is in). With --write that table replaces the block between the markers
in docs/benchmarks.md.
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
    DOC,
    WRK_SCRIPT,
    commit,
    free_port,
    leadgate_command,
    load,
    machine,
    wait_ready,
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
    try:
        (work / "post.lua").write_text(WRK_SCRIPT, encoding="utf-8")
        port = free_port()
        log = (work / "serve.log").open("wb")
        proc = subprocess.Popen(
            leadgate_command(port, work / "leadgate.db"), cwd=work, stdout=log, stderr=log
        )
        try:
            wait_ready(port, proc)
            env = {**os.environ, "ACK_FILE": str(work / "acked.txt")}
            load_gen = subprocess.Popen(
                ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds + 4}s", "-s",
                 str(work / "post.lua"), f"http://127.0.0.1:{port}"],
                stdout=subprocess.PIPE, env=env, text=True,
            )  # fmt: skip
            time.sleep(2)  # past the warm-up
            raw = work / "samples.txt"
            common = ["record", "-p", str(proc.pid), "-d", str(args.seconds), "-r", "250"]
            subprocess.run([py_spy, *common, "-f", "raw", "-o", str(raw)], check=True,
                           capture_output=True)  # fmt: skip
            out, _ = load_gen.communicate()
            rps = re.search(r"Requests/sec:\s+([\d.]+)", out or "")
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
            log.close()
        render_svg(raw)
        samples: Counter[str] = Counter()
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            # The main thread only: the fsync thread waits in COMMIT with the GIL released.
            if not any("run_forever" in f for f in frames):
                continue
            samples[part_of(frames)] += int(count)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = sum(samples.values())
    rows = "\n".join(
        f"| {label} | {count / total * 100:.1f} % |" for label, count in samples.most_common()
    )
    block = "\n".join(
        [
            BEGIN_MARK,
            f"Generated by `scripts/profile_hot_path.py --seconds {args.seconds}` at commit "
            f"{commit()}, {started}; {machine()}; Python {platform.python_version()}; "
            f"{load()} after the run. py-spy sampled `leadgate serve`'s main thread 250 "
            f"times a second for {args.seconds} s while wrk posted new people with "
            f"{args.connections} connections (at {rps.group(1) if rps else '?'} req/s under "
            "the profiler). Each sample is charged to the innermost part it was in. "
            "Flame graph: [img/hot-path-flame.svg](img/hot-path-flame.svg).",
            "",
            "| part of the request | share of the main thread's samples |",
            "|---|---|",
            rows,
            END_MARK,
        ]
    )
    print(block)
    if args.write:
        text = DOC.read_text(encoding="utf-8")
        pattern = re.compile(re.escape(BEGIN_MARK) + ".*?" + re.escape(END_MARK), re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text)
        else:
            text = text.rstrip("\n") + "\n\n### Where the time goes\n\n" + block + "\n"
        DOC.write_text(text, encoding="utf-8")
        print(f"written to {DOC}")
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
