"""Real mail servers for the email tests: Dovecot (IMAP) in a temporary directory, and an
aiosmtpd SMTP server that keeps what it receives.

Dovecot comes from Debian's dovecot-imapd (.ci/run installs it). It runs unprivileged
parts as the usual dovecot/dovenull users and keeps mail as 'nobody' when the tests run
as root (Dovecot refuses to store mail as root), or as the current user otherwise. One
static password lets any user name in, and each test uses its own user, so tests share
one server without seeing each other's mail. Plain IMAP, IMAPS and STARTTLS are served,
with a certificate from a throwaway CA (trustme) that the connector is told to trust.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from imapclient import IMAPClient  # type: ignore[import-untyped]

PASSWORD = "dovecot-test-password-4f1a"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
MISSING = (
    "Dovecot is not installed: the email tests need a real IMAP server. Install Debian's "
    "dovecot-imapd (`apt-get install dovecot-imapd`; .ci/run does this)."
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def _mail_owner() -> tuple[str, int, int]:
    if os.geteuid() == 0:
        user = pwd.getpwnam("nobody")
        return user.pw_name, user.pw_uid, user.pw_gid
    me = pwd.getpwuid(os.geteuid())
    return me.pw_name, me.pw_uid, me.pw_gid


@dataclass
class Dovecot:
    root: Path
    port: int = 0  # plain IMAP, STARTTLS offered
    tls_port: int = 0  # IMAPS
    ca_file: Path = field(default_factory=Path)
    process: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.root / "dovecot.conf"

    def start(self) -> None:
        if not Path(DOVECOT).exists():
            raise RuntimeError(MISSING)
        self.root.chmod(0o755)  # login processes (dovenull) must reach base_dir
        user, uid, gid = _mail_owner()
        mail = self.root / "mail"
        mail.mkdir()
        os.chown(mail, uid, gid)
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        cert.private_key_and_cert_chain_pem.write_to_path(str(self.root / "server.pem"))
        ca.cert_pem.write_to_path(str(self.root / "ca.pem"))
        self.ca_file = self.root / "ca.pem"
        self.port, self.tls_port = free_port(), free_port()
        privileged = os.geteuid() == 0
        self.config.write_text(
            f"""
base_dir = {self.root}/run
state_dir = {self.root}/state
instance_name = leadgate-test-{self.port}
listen = 127.0.0.1
protocols = imap
log_path = {self.root}/dovecot.log
ssl = yes
ssl_cert = <{self.root}/server.pem
ssl_key = <{self.root}/server.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:{mail}/%u
mailbox_idle_check_interval = 1 secs
default_login_user = {"dovenull" if privileged else user}
default_internal_user = {"dovecot" if privileged else user}
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = 1
passdb {{
  driver = static
  args = password={PASSWORD} nodelay=yes
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={mail}/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {self.port}
  }}
  inet_listener imaps {{
    port = {self.tls_port}
    ssl = yes
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""
        )
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            _wait_port(self.port)
            _wait_port(self.tls_port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"dovecot did not start: {self.log()}") from None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kick(self, user: str) -> None:
        """Drop every connection of a user, as a server restart or a network cut would."""
        subprocess.run(
            [DOVEADM, "-c", str(self.config), "kick", user],
            check=False,
            capture_output=True,
        )

    # --- acting as the outside world (senders, a mail admin) -----------------------------

    @contextlib.contextmanager
    def client(self, user: str) -> Iterator[Any]:
        c = IMAPClient("127.0.0.1", self.port, ssl=False, timeout=10)
        c.login(user, PASSWORD)
        try:
            yield c
        finally:
            with contextlib.suppress(Exception):
                c.logout()

    def deliver(
        self, user: str, raw: bytes, folder: str = "INBOX", at: datetime | None = None
    ) -> None:
        with self.client(user) as c:
            if not c.folder_exists(folder):
                c.create_folder(folder)
            c.append(folder, raw, msg_time=at)

    def flags(self, user: str, folder: str = "INBOX") -> dict[int, tuple[bytes, ...]]:
        with self.client(user) as c:
            c.select_folder(folder, readonly=True)
            return {int(k): v[b"FLAGS"] for k, v in c.fetch(c.search("ALL"), ["FLAGS"]).items()}

    def recreate(self, user: str, folder: str) -> int:
        """Delete and create a folder again: a new UIDVALIDITY. Returns it."""
        with self.client(user) as c:
            c.delete_folder(folder)
            c.create_folder(folder)
            return int(c.select_folder(folder)[b"UIDVALIDITY"])


@contextlib.contextmanager
def running_dovecot() -> Iterator[Dovecot]:
    root = Path(tempfile.mkdtemp(prefix="lg-dovecot-"))  # short: unix socket paths are limited
    server = Dovecot(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- SMTP ----------------------------------------------------------------------------------


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message(self) -> Message:
        return message_from_bytes(self.data)


class _Sink:
    def __init__(self) -> None:
        self.received: list[Received] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
        )
        return "250 OK"


@dataclass
class SmtpSink:
    port: int
    handler: _Sink

    @property
    def received(self) -> list[Received]:
        return self.handler.received


@contextlib.contextmanager
def running_smtp() -> Iterator[SmtpSink]:
    handler = _Sink()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpSink(port, handler)
    finally:
        controller.stop()
