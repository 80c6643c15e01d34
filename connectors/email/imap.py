"""One blocking IMAP connection to one folder, with imapclient.

Every method blocks; the poller runs them on a single worker thread of its own, so calls
never overlap and the event loop never waits on the network. `abort()` is the exception:
it may be called from any thread to break a blocked read (shutdown, kill tests).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from imapclient import IMAPClient  # type: ignore[import-untyped]
from imapclient.exceptions import (  # type: ignore[import-untyped]
    IMAPClientError,
    LoginError,
)

from connectors.email.settings import MailboxSettings

# What a broken or refused connection raises: imapclient's errors (imaplib's, which they
# subclass), socket and TLS errors (OSError).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (IMAPClientError, OSError, EOFError)
__all__ = [
    "CONNECTION_ERRORS",
    "Envelope",
    "FolderMissing",
    "FolderState",
    "ImapSession",
    "LoginError",
]


class FolderMissing(RuntimeError):
    """The configured folder does not exist on the server."""


@dataclass(frozen=True, slots=True)
class FolderState:
    uidvalidity: int
    uidnext: int | None
    exists: int


@dataclass(frozen=True, slots=True)
class Envelope:
    """What is known of a message before its body is fetched."""

    uid: int
    size: int
    arrived_at: datetime | None  # INTERNALDATE, UTC


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        # Without the path the log says only "No such file or directory".
        raise OSError(f"ca_file {ca_file}: {exc}") from exc


class ImapSession:
    def __init__(self, settings: MailboxSettings, folder: str) -> None:
        self.settings = settings
        self.folder = folder
        self._client: Any = None

    # --- connection ----------------------------------------------------------------------

    def connect(self) -> FolderState:
        s = self.settings
        context = tls_context(str(s.ca_file) if s.ca_file else None)
        client = IMAPClient(
            s.host,
            port=s.effective_port,
            ssl=s.security == "ssl",
            ssl_context=context if s.security == "ssl" else None,
            timeout=s.timeout_seconds,
        )
        self._client = client
        client.normalise_times = False  # keep INTERNALDATE's zone: we convert to UTC ourselves
        if s.security == "starttls":
            client.starttls(context)
        client.login(s.username, s.password.get_secret_value())
        return self.select()

    def select(self) -> FolderState:
        client = self._live()
        if not client.folder_exists(self.folder):
            raise FolderMissing(f"folder {self.folder!r} does not exist")
        info = client.select_folder(self.folder, readonly=True)
        uidnext = info.get(b"UIDNEXT")
        return FolderState(
            uidvalidity=int(info[b"UIDVALIDITY"]),
            uidnext=int(uidnext) if uidnext is not None else None,
            exists=int(info.get(b"EXISTS", 0)),
        )

    @property
    def has_idle(self) -> bool:
        return bool(self._live().has_capability("IDLE"))

    def abort(self) -> None:
        """Break the connection at once, from any thread; the blocked call then fails."""
        client = self._client
        if client is None:
            return
        with contextlib.suppress(Exception):
            client.socket().shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:
            with contextlib.suppress(Exception):
                client.shutdown()

    def _live(self) -> Any:
        if self._client is None:
            raise ConnectionError("not connected")
        return self._client

    # --- reading -------------------------------------------------------------------------

    def noop(self) -> None:
        self._live().noop()

    def highest_uid(self) -> int:
        uids = self._live().search(["UID", "*"])
        return max((int(u) for u in uids), default=0)

    def uids_after(
        self, last_uid: int, until: int | None = None, since: date | None = None
    ) -> list[int]:
        """UIDs above last_uid (up to `until`, arrived on or after `since`), ascending.

        "UID n:*" always matches the highest UID even when it is below n, so the result
        is filtered again here.
        """
        upper = "*" if until is None else str(until)
        if until is not None and until <= last_uid:
            return []
        criteria: list[Any] = ["UID", f"{last_uid + 1}:{upper}"]
        if since is not None:
            criteria += ["SINCE", since]
        found = self._live().search(criteria)
        return sorted(
            u for u in (int(x) for x in found) if u > last_uid and (until is None or u <= until)
        )

    def envelopes(self, uids: list[int]) -> dict[int, Envelope]:
        """Size and arrival time per UID; messages expunged meanwhile are simply absent."""
        if not uids:
            return {}
        out = {}
        for uid, data in self._live().fetch(uids, ["RFC822.SIZE", "INTERNALDATE"]).items():
            arrived = data.get(b"INTERNALDATE")
            if isinstance(arrived, datetime):
                arrived = arrived.astimezone(UTC) if arrived.tzinfo else arrived.replace(tzinfo=UTC)
            else:
                arrived = None
            out[int(uid)] = Envelope(int(uid), int(data.get(b"RFC822.SIZE", 0)), arrived)
        return out

    def bodies(self, uids: list[int]) -> dict[int, bytes]:
        """Whole messages, with BODY.PEEK so nothing is marked as read."""
        return self._fetch_section(uids, "BODY.PEEK[]", b"BODY[]")

    def headers(self, uids: list[int]) -> dict[int, bytes]:
        return self._fetch_section(uids, "BODY.PEEK[HEADER]", b"BODY[HEADER]")

    def _fetch_section(self, uids: list[int], item: str, key: bytes) -> dict[int, bytes]:
        if not uids:
            return {}
        out = {}
        for uid, data in self._live().fetch(uids, [item]).items():
            body = data.get(key)
            if isinstance(body, bytes):
                out[int(uid)] = body
        return out

    # --- IDLE ----------------------------------------------------------------------------

    def idle_start(self) -> bool:
        """Enter IDLE; True when the folder already changed (fetch again at once).

        A message that arrives between our last fetch and the IDLE command is announced by
        an untagged EXISTS before the server's "+" continuation; imaplib files it under
        untagged_responses, where idle_check() never looks. Unread, it would wait for the
        next IDLE cycle (idle_minutes: up to half an hour)."""
        client = self._live()
        client.idle()
        pending = client._imap.untagged_responses
        changed = bool(pending.pop("EXISTS", None)) | bool(pending.pop("RECENT", None))
        return changed

    def idle_wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds in IDLE; True when the folder changed."""
        responses = self._live().idle_check(timeout=timeout)
        for response in responses:
            if response and response[0] in (b"BYE", b"NO", b"BAD"):
                # Dovecot says NO when the folder is deleted under us; others say BYE.
                said = b" ".join(x for x in response if isinstance(x, bytes))
                raise ConnectionError(f"server during IDLE: {said.decode(errors='replace')}")
            if any(item in (b"EXISTS", b"RECENT") for item in response[1:2]):
                return True
        return False

    def idle_end(self) -> None:
        self._live().idle_done()
