"""The OAuth server: renewing the application's access token with its refresh token.

Facts (Bitrix24 REST docs, settings/oauth): GET <oauth>/oauth/token/?grant_type=
refresh_token&client_id=..&client_secret=..&refresh_token=.. answers 200 with a new
access_token (1 hour), a NEW refresh_token (the old one is spent: "retain it instead of
the previous one"; it lives 180 days), expires (unix), expires_in, member_id,
client_endpoint (the portal's REST base), server_endpoint (this auth server: regional),
scope, status, user_id. Refusals come as {"error", "error_description"}: invalid_grant
(the refresh token is spent, expired or revoked: reinstall), invalid_client (the app was
removed or its secret changed), PAYMENT_REQUIRED, ... The client_secret goes to the auth
server only, never to the portal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from gateway.delivery.http_session import LazySession
from gateway.delivery.sink import masked

# The regional auth servers the docs and real answers name; a token answer may move us
# between these (or to the configured one), never elsewhere: the client_secret goes there.
KNOWN_AUTH_HOSTS = frozenset({"oauth.bitrix.info", "oauth.bitrix24.tech"})


class OAuthError(Exception):
    """kind: "refused" (the auth server said no: a person must act) or "retry"."""

    def __init__(self, kind: str, code: str, description: str = "") -> None:
        super().__init__(f"oauth: {code}: {description}".rstrip(": "))
        self.kind = kind
        self.code = code
        self.description = description


@dataclass(frozen=True, slots=True)
class Grant:
    """What a token answer (or an installation) gives us."""

    access_token: str
    refresh_token: str
    expires_at: datetime
    member_id: str
    client_endpoint: str
    server_endpoint: str | None
    scope: str
    user_id: str | None


def grant_from(answer: dict[str, Any], now: datetime) -> Grant:
    """A token answer as a Grant; OAuthError("retry") when it lacks what we need."""
    access = answer.get("access_token")
    refresh = answer.get("refresh_token")
    member = answer.get("member_id")
    endpoint = answer.get("client_endpoint")
    if not all(isinstance(v, str) and v for v in (access, refresh, member, endpoint)):
        raise OAuthError("retry", "BAD_ANSWER", "token answer without tokens or endpoints")
    assert isinstance(access, str) and isinstance(refresh, str)
    assert isinstance(member, str) and isinstance(endpoint, str)
    return Grant(
        access_token=access,
        refresh_token=refresh,
        expires_at=expiry(answer, now),
        member_id=member,
        client_endpoint=endpoint,
        server_endpoint=_str(answer.get("server_endpoint")),
        scope=_str(answer.get("scope")) or "",
        user_id=_str(answer.get("user_id")),
    )


def expiry(answer: dict[str, Any], now: datetime) -> datetime:
    """When the access token runs out: `expires` (unix) when given and sane, else now plus
    `expires_in` (3600 when missing). Strings are read too: events send every value as one."""
    expires = _number(answer.get("expires"))
    if expires is not None and now.timestamp() < expires < now.timestamp() + 86_400:
        return datetime.fromtimestamp(expires, UTC)
    seconds = _number(answer.get("expires_in"))
    if seconds is None or not 0 < seconds <= 86_400:
        seconds = 3600.0
    return now + timedelta(seconds=seconds)


def auth_server(configured: str, named: str | None) -> str:
    """The auth server to renew at: the one a token answer named when it is a known
    Bitrix24 auth server (or the configured one), else the configured one."""
    if named:
        try:
            host = (urlsplit(named).hostname or "").lower()
        except ValueError:  # not a URL (kept from an installation as given): ours then
            return configured
        if host in KNOWN_AUTH_HOSTS and urlsplit(named).scheme == "https":
            return f"https://{host}"
        if host and host == (urlsplit(configured).hostname or "").lower():
            return configured
    return configured


def _str(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


class OAuthClient:
    def __init__(self, client_id: str, client_secret: str, *, timeout: float) -> None:
        self.client_id = client_id
        self._secret = client_secret
        self._http = LazySession(timeout)

    async def close(self) -> None:
        await self._http.close()

    async def refresh(self, server: str, refresh_token: str, now: datetime) -> Grant:
        params = {
            "grant_type": "refresh_token",
            "client_id": self.client_id,
            "client_secret": self._secret,
            "refresh_token": refresh_token,
        }
        session = await self._http.get()
        try:
            async with session.get(
                f"{server}/oauth/token/", params=params, allow_redirects=False
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            # aiohttp may quote the URL, and the URL holds the secret and the token.
            text = masked(f"{type(exc).__name__}: {exc}", self._secret, refresh_token)
            raise OAuthError("retry", "NETWORK", text) from None
        try:
            answer = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        if status == 200 and "error" not in answer:
            return grant_from(answer, now)
        code = str(answer.get("error") or f"HTTP_{status}")[:100]
        description = masked(str(answer.get("error_description") or ""), self._secret)[:300]
        code = masked(code, self._secret, refresh_token)
        if "error" in answer and status in (200, 400, 401, 403):
            raise OAuthError("refused", code, description)
        raise OAuthError("retry", code, description)
