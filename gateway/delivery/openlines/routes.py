"""What Bitrix24 calls: the installation, the events, the connector's settings page.

    POST /v1/openlines/install     the local application's "initial installation path":
                                   ONAPPINSTALL with the tokens (form-encoded auth[...])
    POST /v1/openlines/events      every bound event, form-encoded, auth[application_token]
    GET|POST /v1/openlines/placement  the page Contact Center opens for the connector

Who may call (a refusal is 401 `unauthorized`, or `wrong_portal` / `not_installed`;
Bitrix24 reads no status, so the codes are for people): an event must carry the
application_token of the installation (or the one pinned in the config), compared in
constant time before anything in it is acted on, and the member_id of the installed
portal. An installation carries no token we know yet, so it is believed only when its
access token works on the configured portal as our application (app.info answers with
our client_id): the portal itself vouches for it.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from gateway.delivery.b24client import B24Error
from gateway.delivery.openlines.client import AppClient
from gateway.delivery.openlines.form import first, nested, read_event_form, read_pairs, text
from gateway.delivery.openlines.metrics import OpenLinesMetrics
from gateway.delivery.openlines.oauth import expiry
from gateway.delivery.openlines.settings import OpenLinesSettings
from gateway.delivery.openlines.steps import EVENTS_PATH, INSTALL_PATH, PLACEMENT_PATH
from gateway.delivery.openlines.tokens import AppTokens, TokenKeeper
from gateway.errors import ApiError

log = logging.getLogger(__name__)

# An event that passed the checks: its name (upper case), the nested form data, and the
# raw body. Returns what became of it, for the metrics ("accepted", "duplicate", ...).
EventHandler = Callable[[str, dict[str, Any], bytes], Awaitable[str]]


def _endpoint(url: str) -> tuple[str, str, int | None, str] | None:
    """What identifies a REST endpoint, or None when `url` is not a URL at all (an unclosed
    "[", a port that is no port): urlsplit and .port raise ValueError for those."""
    try:
        parts = urlsplit(url)
        return parts.scheme, (parts.hostname or "").lower(), parts.port, parts.path.rstrip("/")
    except ValueError:
        return None


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


class OpenLinesRoutes:
    def __init__(
        self,
        settings: OpenLinesSettings,
        keeper: TokenKeeper,
        client: AppClient,
        metrics: OpenLinesMetrics,
        *,
        on_event: EventHandler,
        on_install: Callable[[], None] = lambda: None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.keeper = keeper
        self.client = client
        self.metrics = metrics
        self.on_event = on_event
        self.on_install = on_install
        self._now = now

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(INSTALL_PATH, self.install),
            web.post(EVENTS_PATH, self.event),
            web.get(PLACEMENT_PATH, self.placement),
            web.post(PLACEMENT_PATH, self.placement),
        ]

    # --- installation ---------------------------------------------------------------------

    async def install(self, request: web.Request) -> web.StreamResponse:
        fields = await read_event_form(request)
        event = (text(fields, "event") or "").upper()
        if event != "ONAPPINSTALL":
            self.metrics.event("ONAPPINSTALL", "invalid")
            raise ApiError(
                400,
                "not_an_installation",
                "expected the ONAPPINSTALL event with auth[...]: create the local application "
                "with «Script only (no user interface)» ticked",
            )
        auth = fields.get("auth")
        needed = (
            "access_token",
            "refresh_token",
            "member_id",
            "client_endpoint",
            "application_token",
        )
        missing = {name: "required" for name in needed if not text(auth, name)}
        if missing:
            self.metrics.event(event, "invalid")
            raise ApiError(
                400, "invalid_installation", "the installation lacks auth fields", missing
            )
        assert isinstance(auth, dict)
        given_app_token = str(auth["application_token"])
        pinned = self.settings.application_token
        if pinned is not None and not hmac.compare_digest(
            given_app_token.encode(), pinned.get_secret_value().encode()
        ):
            self.metrics.event(event, "unauthorized")
            raise ApiError(401, "unauthorized", "wrong application_token")
        given_endpoint = _endpoint(str(auth["client_endpoint"]))
        if given_endpoint is None:
            self.metrics.event(event, "invalid")
            raise ApiError(
                400,
                "invalid_installation",
                "the installation's client_endpoint is not a URL",
                {"client_endpoint": "not a URL"},
            )
        if given_endpoint != _endpoint(self.settings.rest_base):
            self.metrics.event(event, "unauthorized")
            raise ApiError(
                401,
                "wrong_portal",
                f"this gateway serves the portal {self.settings.portal}, not this installation's",
            )
        access = str(auth["access_token"])
        await self._vouch(access, event)
        now = self._now()
        tokens = AppTokens(
            access_token=access,
            refresh_token=str(auth["refresh_token"]),
            expires_at=expiry(auth, now),
            member_id=str(auth["member_id"]),
            client_endpoint=self.settings.rest_base,
            server_endpoint=text(auth, "server_endpoint"),
            scope=text(auth, "scope") or "",
            application_token=given_app_token,
            user_id=text(auth, "user_id"),
            installed_at=now,
        )
        try:
            await self.keeper.install(tokens)
        except B24Error:  # a renewal held the lease for longer than it may: try again
            raise self._unavailable(
                event, "the application's token is being renewed; reinstall in a minute"
            ) from None
        self.on_install()
        self.metrics.event(event, "accepted")
        return _json({"status": "installed"})

    def _unavailable(self, event: str, detail: str) -> ApiError:
        self.metrics.event(event, "unavailable")
        return ApiError(503, "portal_unavailable", detail, headers={"Retry-After": "30"})

    async def _vouch(self, access_token: str, event: str) -> None:
        """The portal confirms the token is our application's: app.info answers with our
        client_id. A token it refuses, or another application's, is not installed."""
        try:
            info = await self.client.call_with(
                access_token, self.settings.rest_base, "app.info", {}
            )
        except B24Error as exc:
            if exc.kind in ("halt", "renew", "permanent"):
                self.metrics.event(event, "unauthorized")
                raise ApiError(
                    401, "unauthorized", f"the portal did not confirm the token: {exc.code}"
                ) from None
            raise self._unavailable(
                event, "could not reach the portal to confirm the installation; reinstall later"
            ) from None
        code = info.get("CODE") if isinstance(info, dict) else None
        if not isinstance(code, str) or not hmac.compare_digest(
            code.encode(), (self.settings.client_id or "").encode()
        ):
            self.metrics.event(event, "unauthorized")
            raise ApiError(401, "unauthorized", "the token belongs to another application")

    # --- events ---------------------------------------------------------------------------

    async def event(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        pairs = await read_pairs(request)
        # Token first: the flat auth[application_token] is compared before the rest of the
        # body is even nested, so nobody without it learns how the body would be read.
        expected = self.keeper.application_token()
        if expected is None:
            await self.keeper.load()
            expected = self.keeper.application_token()
        given = first(pairs, "auth[application_token]")
        name = (first(pairs, "event") or "").upper()
        label = name if name in _KNOWN else "other"
        if expected is None:
            self.metrics.event(label, "unauthorized")
            raise ApiError(401, "not_installed", "the application is not installed here")
        if not given:
            self.metrics.event(label, "unauthorized")
            raise ApiError(401, "unauthorized", "missing auth[application_token]")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            self.metrics.event(label, "unauthorized")
            raise ApiError(401, "unauthorized", "wrong auth[application_token]")
        fields = nested(pairs)
        tokens = self.keeper.tokens
        member = text(fields, "auth", "member_id")
        if tokens is not None and member is not None and member != tokens.member_id:
            self.metrics.event(label, "unauthorized")
            raise ApiError(401, "unauthorized", "an event of another portal")
        if not name:
            self.metrics.event(label, "invalid")
            raise ApiError(400, "invalid_event", "the body names no event")
        if name == "ONAPPUNINSTALL":
            await self.keeper.revoke("the application was removed from the portal")
            self.metrics.event(label, "accepted")
            return _json({"status": "ok"})
        try:
            outcome = await self.on_event(name, fields, raw)
        except ApiError:
            self.metrics.event(label, "invalid")
            raise
        self.metrics.event(label, outcome)
        return _json({"status": "ok"})

    # --- the connector's page in Contact Center ------------------------------------------

    async def placement(self, request: web.Request) -> web.StreamResponse:
        # Contact Center opens this in a frame when the connector's tile is clicked. It
        # holds nothing secret and changes nothing: setup is `leadgate openlines setup`.
        if request.method == "POST":
            await request.read()
        page = _PLACEMENT_PAGE.format(
            name=self.settings.connector_name.replace("<", "&lt;").replace(">", "&gt;"),
            line=self.settings.line,
        )
        return web.Response(
            text=page,
            content_type="text/html",
            headers={
                "Content-Security-Policy": (
                    "default-src 'none'; style-src 'unsafe-inline'; "
                    f"frame-ancestors https://{self.settings.portal}"
                ),
                "X-Content-Type-Options": "nosniff",
            },
        )


_KNOWN = frozenset(
    {
        "ONIMCONNECTORMESSAGEADD",
        "ONIMCONNECTORDIALOGFINISH",
        "ONIMCONNECTORSTATUSDELETE",
        "ONAPPUNINSTALL",
    }
)

_PLACEMENT_PAGE = """<!doctype html><html lang="ru"><head><meta charset="utf-8">
<title>{name}</title><style>body{{font:15px system-ui;margin:1.5em;max-width:40em}}</style>
</head><body><h1>{name}</h1>
<p>Этот канал подключает к открытой линии чаты, которые принимает leadgate: Telegram,
ВКонтакте, Facebook, Instagram и чат на сайте. Сообщения клиентов приходят сюда, ответы
продавцов уходят клиенту в тот мессенджер, из которого он написал.</p>
<p>Канал настраивается на стороне leadgate командой <code>leadgate openlines setup</code>
(линия {line}); здесь настраивать нечего.</p></body></html>"""
