"""`leadgate serve` as a real process on a free port, for tests that need the real server:
its own event loop, its slow-client deadlines, its log handler on stderr."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

LEADGATE = Path(sys.executable).with_name("leadgate")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Served:
    """`with Served(tmp_path, toml) as app:` — app.base is its URL, app.stderr() its log."""

    def __init__(self, workdir: Path, config: str, *, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "leadgate.toml"
        self.config.write_text(config, encoding="utf-8")
        self.log_path = workdir / "stderr.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Served:
        command = [str(LEADGATE)] if LEADGATE.exists() else [sys.executable, "-m", "gateway.cli"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEADGATE_")}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [*command, "serve", "-c", str(self.config), "--port", str(self.port)],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=log,
            )
        self._wait_healthy()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def stderr(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def _wait_healthy(self, deadline_s: float = 30.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"leadgate serve exited early:\n{self.stderr()}")
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.05)  # polling for startup, not timing anything
        raise AssertionError("leadgate serve did not become healthy")
