"""/ops: the page an ops engineer keeps open, its refreshing panel, its JSON, and who may see it.

Who may: a client inside `[ops] allowed_networks` (the office, the VPN), or anyone with an
admin token — as a bearer token (scripts, /ops/data), or through the login form, which
sets a session cookie. The cookie holds no token: it is `name.expiry.signature`, the
signature an HMAC made with that admin token, so it works on every replica, ends at its
expiry, and dies with the token when the token is removed from the config.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from datetime import UTC, datetime

import orjson
from aiohttp import web

from gateway import ops_render, ops_snapshot
from gateway.errors import ApiError
from gateway.http import (
    Network,
    bearer_token,
    client_ip,
    in_networks,
    match_token,
    networks,
    read_fields,
    wants_html,
)
from gateway.i18n import N_, gettext_for, negotiate
from gateway.keys import SETTINGS
from gateway.supervisor import mask_details

COOKIE = "leadgate_ops"
SESSION_SECONDS = 12 * 3600
MSG_WRONG_TOKEN = N_("Неверный токен")
MSG_NO_TOKENS = N_(
    "Вход не настроен: добавьте токен в [admin.tokens] или свою сеть в [ops] allowed_networks."
)

_NETWORKS: web.AppKey[list[Network]] = web.AppKey("ops_networks")


def _sign(secret: str, name: str, expires: int) -> str:
    mac = hmac.new(secret.encode(), f"leadgate-ops|{name}|{expires}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def make_session(request: web.Request, name: str, now: float | None = None) -> str:
    token = request.app[SETTINGS].admin.tokens[name].get_secret_value()
    expires = int((now or time.time()) + SESSION_SECONDS)
    return f"{name}.{expires}.{_sign(token, name, expires)}"


def session_ok(request: web.Request, value: str, now: float | None = None) -> bool:
    parts = value.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    name, expires, signature = parts[0], int(parts[1]), parts[2]
    token = request.app[SETTINGS].admin.tokens.get(name)
    if token is None or expires < (now or time.time()):
        return False
    return hmac.compare_digest(signature, _sign(token.get_secret_value(), name, expires))


def authorized(request: web.Request) -> bool:
    settings = request.app[SETTINGS]
    allowed = request.app[_NETWORKS]
    if allowed:
        trusted = networks(settings.server.trusted_proxies)
        if in_networks(client_ip(request, trusted), allowed):
            return True
    tokens = settings.admin.tokens
    if match_token(bearer_token(request), tokens) is not None:
        return True
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and session_ok(request, cookie)


def _locale(request: web.Request) -> str:
    return negotiate(request.headers.get("Accept-Language"))


def _html(text: str, *, status: int = 200, nonce: str | None = None) -> web.Response:
    script = f"script-src 'nonce-{nonce}'; " if nonce else ""
    return web.Response(
        status=status,
        text=text,
        content_type="text/html",
        headers={
            # Everything is inline: nothing may load from elsewhere, and no one may frame it.
            "Content-Security-Policy": (
                f"default-src 'none'; {script}style-src 'unsafe-inline'; connect-src 'self'; "
                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
            ),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def _refuse(request: web.Request) -> web.StreamResponse:
    if wants_html(request):
        settings = request.app[SETTINGS]
        locale = _locale(request)
        error = None if settings.admin.tokens else gettext_for(locale)(MSG_NO_TOKENS)
        return _html(ops_render.login_page(locale, error), status=401)
    raise ApiError(
        401,
        "unauthorized",
        "an admin bearer token (or the /ops login), or a client in [ops] allowed_networks",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def ops_page(request: web.Request) -> web.StreamResponse:
    if not authorized(request):
        return _refuse(request)
    snap = await ops_snapshot.take(request.app)
    nonce = secrets.token_urlsafe(16)
    return _html(ops_render.page(snap, _locale(request), nonce), nonce=nonce)


async def ops_panel(request: web.Request) -> web.StreamResponse:
    if not authorized(request):
        raise ApiError(401, "unauthorized", "the /ops session ended; log in again")
    snap = await ops_snapshot.take(request.app)
    return _html(ops_render.panel(snap, _locale(request)))


async def ops_data(request: web.Request) -> web.StreamResponse:
    if not authorized(request):
        return _refuse(request)
    snap = await ops_snapshot.take(request.app)
    data = ops_snapshot.as_json(snap)
    data["problems"] = [mask_details(p) for p in data["problems"]]
    return web.Response(
        body=orjson.dumps(data),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def login(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    # The shared reader: a malformed body is the client's 400/415, never a 500.
    form = await read_fields(request)
    given = form.get("token")
    name = match_token(given if isinstance(given, str) else None, settings.admin.tokens)
    locale = _locale(request)
    if name is None:
        _ = gettext_for(locale)
        error = _(MSG_WRONG_TOKEN) if settings.admin.tokens else _(MSG_NO_TOKENS)
        return _html(ops_render.login_page(locale, error), status=401)
    response = web.HTTPSeeOther("/ops")
    response.set_cookie(
        COOKIE,
        make_session(request, name),
        max_age=SESSION_SECONDS,
        path="/ops",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther("/ops")
    response.del_cookie(COOKIE, path="/ops")
    raise response


async def _started(app: web.Application) -> None:
    app[ops_snapshot.STARTED_AT] = datetime.now(UTC)


def setup(app: web.Application) -> None:
    app[_NETWORKS] = networks(app[SETTINGS].ops.allowed_networks)
    app.on_startup.append(_started)
    app.router.add_get("/ops", ops_page)
    app.router.add_get("/ops/panel", ops_panel)
    app.router.add_get("/ops/data", ops_data)
    app.router.add_post("/ops/login", login)
    app.router.add_post("/ops/logout", logout)
