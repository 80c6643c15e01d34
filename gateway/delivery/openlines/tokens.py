"""The application's OAuth tokens: kept in the store, renewed by one replica at a time.

The store holds them as checkpoints (durable, shared by every replica and the CLI):
`openlines:oauth` the tokens of the installation, `openlines:revoked` why Bitrix24 last
refused them. A refresh token works once: renewing gives a new pair and spends the old
one. So
- one replica renews at a time (the coordination lease `openlines:refresh`); the others
  wait and re-read the store, where the winner put the new pair;
- the new pair is stored before it is used: a crash right after renewing must not leave
  the store with a spent refresh token;
- before renewing, the store is read again: someone (another replica, the CLI) may have
  renewed already, and their pair is the one to use;
- a (re)installation writes its tokens under the same lease, and a renewal stores its pair
  only while the store still holds the installation it renewed (`installed_at` is the
  generation: a renewal keeps it, an installation sets a new one): the renewal of an old
  installation that was in flight when the application was reinstalled never overwrites
  the new installation's tokens;
- a refusal (invalid_grant: revoked, spent, or older than 180 days) is believed only when
  the store still holds the refresh token that was refused; then mirroring stops, and
  /readyz says to reinstall. A new installation clears it (the refusal names the tokens
  it was about, by a fingerprint).
Renewal happens when a call meets expired_token, or when a token is used within
`refresh_margin_seconds` of its expiry; never on a timer (Bitrix24 may block
applications that renew on a schedule).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import orjson

from gateway.coordination import Coordination, Lease
from gateway.delivery.b24client import B24Error
from gateway.delivery.openlines.oauth import Grant, OAuthClient, OAuthError, auth_server
from gateway.delivery.openlines.settings import OpenLinesSettings
from gateway.redact import redact

log = logging.getLogger(__name__)

TOKENS = "openlines:oauth"
REVOKED = "openlines:revoked"
# The connector's state on the line, when Bitrix24 said it was switched off.
LINE = "openlines:line"
LEASE = "openlines:refresh"
# How long a replica waits for another one's renewal before it gives up (and retries later).
WAIT_FOR_PEER = 45.0
# After a refusal: when to look whether another process renewed (and is storing the pair).
PEER_SAVE_WAITS = (0.0, 0.5, 1.5)


class Checkpoints(Protocol):
    async def get_checkpoint(self, name: str) -> str | None: ...

    async def save_checkpoint(self, name: str, value: str) -> None: ...


class AppState(StrEnum):
    NOT_INSTALLED = "not_installed"
    READY = "ready"
    REVOKED = "revoked"


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class AppTokens:
    access_token: str
    refresh_token: str
    expires_at: datetime
    member_id: str
    client_endpoint: str
    server_endpoint: str | None
    scope: str
    application_token: str
    user_id: str | None
    installed_at: datetime
    refreshed_at: datetime | None = None

    @property
    def fingerprint(self) -> str:
        """Names these tokens without holding them (for the revocation record)."""
        return hashlib.sha256(self.refresh_token.encode()).hexdigest()[:16]

    def renewed(self, grant: Grant, now: datetime) -> AppTokens:
        return replace(
            self,
            access_token=grant.access_token,
            refresh_token=grant.refresh_token,
            expires_at=grant.expires_at,
            client_endpoint=grant.client_endpoint,
            server_endpoint=grant.server_endpoint or self.server_endpoint,
            scope=grant.scope or self.scope,
            user_id=grant.user_id or self.user_id,
            refreshed_at=now,
        )

    def dumps(self) -> str:
        return orjson.dumps(
            {
                "access_token": self.access_token,
                "refresh_token": self.refresh_token,
                "expires_at": _iso(self.expires_at),
                "member_id": self.member_id,
                "client_endpoint": self.client_endpoint,
                "server_endpoint": self.server_endpoint,
                "scope": self.scope,
                "application_token": self.application_token,
                "user_id": self.user_id,
                "installed_at": _iso(self.installed_at),
                "refreshed_at": _iso(self.refreshed_at) if self.refreshed_at else None,
            }
        ).decode()

    @classmethod
    def loads(cls, text: str) -> AppTokens | None:
        try:
            data: Any = orjson.loads(text)
            refreshed = data.get("refreshed_at")
            return cls(
                access_token=str(data["access_token"]),
                refresh_token=str(data["refresh_token"]),
                expires_at=datetime.fromisoformat(data["expires_at"]),
                member_id=str(data["member_id"]),
                client_endpoint=str(data["client_endpoint"]),
                server_endpoint=data.get("server_endpoint"),
                scope=str(data.get("scope") or ""),
                application_token=str(data["application_token"]),
                user_id=data.get("user_id"),
                installed_at=datetime.fromisoformat(data["installed_at"]),
                refreshed_at=datetime.fromisoformat(refreshed) if refreshed else None,
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None


@dataclass(frozen=True, slots=True)
class Revocation:
    fingerprint: str
    reason: str
    at: datetime


class TokenKeeper:
    def __init__(
        self,
        settings: OpenLinesSettings,
        checkpoints: Checkpoints,
        coordination: Coordination,
        oauth: OAuthClient,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        record: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.checkpoints = checkpoints
        self.coordination = coordination
        self.oauth = oauth
        self._now = now
        self._sleep = sleep
        self._record = record or (lambda outcome: None)
        self.state = AppState.NOT_INSTALLED
        self.revocation: Revocation | None = None
        self.line_off: str | None = None  # why the connector is off on the line, if it is
        self._tokens: AppTokens | None = None
        # A renewed pair the store did not take (it was down): the old refresh token is
        # spent, so this one is kept and saved again before anything else is read.
        self._unsaved: AppTokens | None = None

    # --- reading --------------------------------------------------------------------------

    @property
    def tokens(self) -> AppTokens | None:
        """The tokens last read (or renewed), whatever the state."""
        return self._tokens

    async def load(self) -> AppTokens | None:
        """Read the store again; the tokens when the application is usable, else None."""
        if self._unsaved is not None:
            await self._save_renewed(self._unsaved)
        raw = await self.checkpoints.get_checkpoint(TOKENS)
        tokens = AppTokens.loads(raw) if raw else None
        revoked_raw = await self.checkpoints.get_checkpoint(REVOKED)
        revocation = _revocation(revoked_raw) if revoked_raw else None
        line_raw = await self.checkpoints.get_checkpoint(LINE)
        self.line_off = _line_off(line_raw) if line_raw else None
        self._tokens = tokens
        if tokens is None:
            self.state, self.revocation = AppState.NOT_INSTALLED, None
            return None
        if revocation is not None and revocation.fingerprint == tokens.fingerprint:
            self.state, self.revocation = AppState.REVOKED, revocation
            return None
        self.state, self.revocation = AppState.READY, None
        return tokens

    def application_token(self) -> str | None:
        """What events must carry: the configured token, else the installation's."""
        if self.settings.application_token is not None:
            return self.settings.application_token.get_secret_value()
        return self._tokens.application_token if self._tokens is not None else None

    def problem(self) -> str | None:
        """For /readyz: why nothing can be mirrored, or None."""
        if self.state is AppState.READY and self.line_off is not None:
            return self.line_off
        if self.state is AppState.NOT_INSTALLED:
            # The path apart from the host: readiness text cuts URL paths (a webhook URL's
            # path is its secret), and this one is the thing the reader needs.
            return (
                "the local application is not installed in Bitrix24 yet; install it (its "
                "handler and install URL is this gateway's public address + "
                "/v1/openlines/install), then run `leadgate openlines setup`"
            )
        if self.state is AppState.REVOKED and self.revocation is not None:
            return (
                f"Bitrix24 refused the application since {self.revocation.at:%Y-%m-%d %H:%M} "
                f"UTC ({self.revocation.reason}); mirroring into Open Lines is stopped and "
                "nothing is lost: reinstall the local application in Bitrix24"
            )
        return None

    # --- using ----------------------------------------------------------------------------

    async def current(self) -> AppTokens:
        """Tokens to call with, renewed first when they are about to run out."""
        tokens = self._tokens if self.state is AppState.READY else None
        if tokens is None or self._unsaved is not None:
            tokens = await self.load()
        if tokens is None:
            raise self._not_ready()
        if self._running_out(tokens):
            tokens = await self.refresh(tokens)
        return tokens

    def _running_out(self, tokens: AppTokens) -> bool:
        """Within the margin of its expiry, and past half its life (so a short-lived token
        is not renewed on every use when the margin exceeds its lifetime)."""
        left = tokens.expires_at - self._now()
        life = tokens.expires_at - (tokens.refreshed_at or tokens.installed_at)
        margin = timedelta(seconds=self.settings.refresh_margin_seconds)
        return left <= margin and left < life / 2

    def _lease_ttl(self) -> float:
        return 2 * self.settings.timeout_seconds + 5

    async def _wait_for_lease(self) -> Lease:
        """The renewal lease, waiting while another holder renews (or installs)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_FOR_PEER
        while (lease := await self.coordination.acquire(LEASE, self._lease_ttl())) is None:
            if loop.time() > deadline:
                self._record("busy")
                raise B24Error("retry", "REFRESH_BUSY", "another replica is renewing")
            await self._sleep(0.2)
        return lease

    async def refresh(self, stale: AppTokens) -> AppTokens:
        """Renew after `stale` was refused or ran out; one replica at a time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_FOR_PEER
        while True:
            fresh = await self._peer_renewed(stale)
            if fresh is not None:
                return fresh
            lease = await self.coordination.acquire(LEASE, self._lease_ttl())
            if lease is None:
                if loop.time() > deadline:
                    self._record("busy")
                    raise B24Error("retry", "REFRESH_BUSY", "another replica is renewing")
                await self._sleep(0.2)
                continue
            try:
                fresh = await self._peer_renewed(stale)
                if fresh is not None:
                    return fresh
                current = self._tokens
                assert current is not None
                return await self._renew(current)
            finally:
                await self.coordination.release(lease)

    async def _peer_renewed(self, stale: AppTokens) -> AppTokens | None:
        """The store's tokens when someone renewed since `stale` (and they are not about
        to run out themselves); raises when the application is not usable."""
        tokens = await self.load()
        if tokens is None:
            raise self._not_ready()
        if tokens.access_token != stale.access_token and not self._running_out(tokens):
            self._record("peer")
            return tokens
        return None

    async def _renew(self, tokens: AppTokens) -> AppTokens:
        server = auth_server(self.settings.oauth_url, tokens.server_endpoint)
        now = self._now()
        try:
            grant = await self.oauth.refresh(server, tokens.refresh_token, now)
        except OAuthError as exc:
            if exc.kind != "refused":
                self._record("failed")
                raise B24Error("retry", exc.code, exc.description) from None
            # Another process without our lease (the CLI) may have spent it first, and be
            # about to store what it got: look again before believing the refusal.
            for pause in PEER_SAVE_WAITS:
                await self._sleep(pause)
                again = await self.load()
                if again is not None and again.refresh_token != tokens.refresh_token:
                    self._record("peer")
                    return again
            reason = f"{exc.code}: {exc.description}" if exc.description else exc.code
            await self.revoke(f"renewing the token was refused: {reason}", tokens)
            self._record("refused")
            raise B24Error("halt", exc.code, self.problem() or reason) from None
        if grant.member_id != tokens.member_id:
            self._record("failed")
            raise B24Error("halt", "WRONG_PORTAL", "the auth server answered for another portal")
        renewed = tokens.renewed(grant, now)
        self._unsaved = renewed
        if not await self._save_renewed(renewed):
            # Reinstalled while the auth server answered: the new installation's tokens
            # are the ones to use; the pair just got belongs to the old one.
            self._record("peer")
            fresh = await self.load()
            if fresh is None:
                raise self._not_ready()
            return fresh
        self._tokens = renewed
        self._record("ok")
        log.info("Open Lines: the application's access token was renewed")
        return renewed

    async def _save_renewed(self, tokens: AppTokens) -> bool:
        """Store a renewed pair unless the store holds another installation by now; False
        (and the pair dropped) then."""
        raw = await self.checkpoints.get_checkpoint(TOKENS)
        held = AppTokens.loads(raw) if raw else None
        if held is not None and held.installed_at != tokens.installed_at:
            log.warning(
                "Open Lines: the application was reinstalled while its token was renewed;"
                " the new installation's tokens are kept"
            )
            if self._unsaved is tokens:
                self._unsaved = None
            return False
        await self.checkpoints.save_checkpoint(TOKENS, tokens.dumps())
        if self._unsaved is tokens:
            self._unsaved = None
        return True

    # --- installing and revoking ---------------------------------------------------------

    async def install(self, tokens: AppTokens) -> None:
        """Keep a new installation's tokens (durably, before the installer hears back).

        Under the renewal lease: a renewal in flight finishes (and stores its pair) first,
        then this installation's tokens replace it; a renewal that starts later reads them.
        """
        lease = await self._wait_for_lease()
        try:
            self._unsaved = None
            await self.checkpoints.save_checkpoint(TOKENS, tokens.dumps())
            await self.load()
        finally:
            await self.coordination.release(lease)
        log.info("Open Lines: the local application was installed (member %s)", tokens.member_id)

    async def revoke(self, reason: str, tokens: AppTokens | None = None) -> None:
        """Bitrix24 will not take these tokens any more: stop, and say so on every replica."""
        tokens = tokens or self._tokens
        if tokens is None:
            return
        record = {"fingerprint": tokens.fingerprint, "reason": redact(reason)[:300]}
        record["at"] = _iso(self._now())
        await self.checkpoints.save_checkpoint(REVOKED, orjson.dumps(record).decode())
        log.error("Open Lines STOPPED: %s", redact(reason))
        await self.load()

    async def set_line(self, active: bool, line: int | None) -> None:
        """Record whether the connector is on the line (setup switched it on; Bitrix24's
        OnImConnectorStatusDelete said someone switched it off), for every replica."""
        record: dict[str, Any] = {"active": active, "line": line, "at": _iso(self._now())}
        await self.checkpoints.save_checkpoint(LINE, orjson.dumps(record).decode())
        if not active:
            log.error("Open Lines: the connector was switched off on line %s", line)
        await self.load()

    def _not_ready(self) -> B24Error:
        code = "NOT_INSTALLED" if self.state is AppState.NOT_INSTALLED else "APP_REVOKED"
        return B24Error("halt", code, self.problem() or code)

    async def watch(self, every: float = 30.0) -> None:
        """Keep this replica's view (and /readyz) in step with the store: another replica
        or the installer may change it. Reads only; renews nothing."""
        while True:
            try:
                await self.load()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Open Lines: reading the tokens failed")
            await self._sleep(every)


def _line_off(text: str) -> str | None:
    try:
        data = orjson.loads(text)
        if data.get("active", True):
            return None
        at = datetime.fromisoformat(data["at"])
        line = data.get("line")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None
    return (
        f"the connector was switched off on line {line} in Contact Center since "
        f"{at:%Y-%m-%d %H:%M} UTC; chats wait in the outbox: switch it on again with "
        "`leadgate openlines setup`"
    )


def _revocation(text: str) -> Revocation | None:
    try:
        data = orjson.loads(text)
        return Revocation(
            str(data["fingerprint"]), str(data["reason"]), datetime.fromisoformat(data["at"])
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
