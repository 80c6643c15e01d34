"""The application side of the Bitrix24 stand-in: OAuth, imconnector, events to leadgate.

Grows `Bitrix24StandIn` (the inbound-webhook side) by what a local application meets, from
the Bitrix24 REST docs (shapes in fixtures/openlines, sources in its SOURCES.md):
- the OAuth server, GET /oauth/token/: grant_type=refresh_token with client_id and
  client_secret (wrong ones: invalid_client); each refresh token works once and the answer
  carries a new one (a spent or unknown one: invalid_grant); access tokens expire after
  `access_ttl` seconds (`expire_access()` ends them now: a token expiring mid-way);
- REST as the application, POST /rest/<method>.json with `auth` in the body (JSON or
  form) or the query: an expired token gets 401 expired_token "The access token provided
  has expired", an unknown one 401 NO_AUTH_FOUND; the SAME leaky bucket as the webhook
  side (one portal, one budget: 503 QUERY_LIMIT_EXCEEDED), the same faults and holds;
- app.info (CODE = client_id), imconnector.register (refusals as HTTP 200 with
  result.result = false: CONNECTOR_ID_REQUIRED is documented; the stand-in also refuses a
  dot in the ID, APPLICATION_REGISTRATION_ERROR_POINT per the docs' text, and a missing
  NAME / ICON / PLACEMENT_HANDLER, with codes of its own), imconnector.activate (400
  ERROR_ARGUMENT "Argument 'ACTIVE' is null or empty"), imconnector.connector.data.set
  (400 ERROR_ARGUMENT for no DATA), imconnector.status, event.bind (400
  ERROR_EVENT_NOT_FOUND for an unknown event; binding the same handler twice: ERROR_CORE
  "Handler already binded", as real portals answer), event.get, event.unbind,
  imconnector.send.messages and imconnector.send.status.delivery (message ids must be an
  array), each refused with 403 WRONG_AUTH_TYPE when called through the inbound webhook
  ("Application context required");
- events to the application, form-encoded with PHP brackets and auth[application_token]
  as Bitrix24 sends them (`post()` of: `install_form()`, the install callback ONAPPINSTALL
  with fresh tokens; `answer_form()`, a seller's answer, OnImConnectorMessageAdd, with
  the line's chat id for our chat; `finish_form()`, OnImConnectorDialogFinish — its
  connector[chat_id] is our chat id and chat[id] the line's, an assumption: the docs'
  example shows one value in both; `event_form()`, anything else).
send.messages does not deduplicate by message.id (nothing documents that it does), and
takes user.name/last_name only as Bitrix24's rule allows (letters, spaces, hyphens,
apostrophes; 25).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import web
from b24_standin import Bitrix24StandIn, Logged, MethodError, php_params

APP_METHODS = frozenset(
    {
        "app.info",
        "event.bind",
        "event.get",
        "event.unbind",
        "imconnector.register",
        "imconnector.activate",
        "imconnector.connector.data.set",
        "imconnector.status",
        "imconnector.send.messages",
        "imconnector.send.status.delivery",
        "imopenlines.config.get",
    }
)
KNOWN_EVENTS = frozenset(
    {
        "ONIMCONNECTORMESSAGEADD",
        "ONIMCONNECTORDIALOGFINISH",
        "ONIMCONNECTORSTATUSDELETE",
        "ONIMCONNECTORLINEDELETE",
        "ONAPPUNINSTALL",
        "ONAPPINSTALL",
        "ONCRMLEADADD",
    }
)
EXPIRED = (401, "expired_token", "The access token provided has expired")


def php_pairs(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """PHP's http_build_query: {"data": {"M": [{"a": 1}]}} -> [("data[M][0][a]", "1")]."""
    out: list[tuple[str, str]] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            out += php_pairs(item, f"{prefix}[{key}]" if prefix else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            out += php_pairs(item, f"{prefix}[{i}]")
    elif value is None:
        pass
    elif isinstance(value, bool):
        out.append((prefix, "1" if value else ""))  # what PHP makes of true and false
    else:
        out.append((prefix, str(value)))
    return out


def form_body(value: Mapping[str, Any]) -> bytes:
    pairs = php_pairs(value)
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs).encode()


@dataclass
class Sent:
    """One message imconnector.send.messages took, as the line shows it."""

    line: int
    user: dict[str, Any]
    message: dict[str, Any]
    chat: dict[str, Any]
    session_chat: int


@dataclass
class _App:
    access: dict[str, float] = field(default_factory=dict)  # token -> expires (monotonic)
    refresh: dict[str, bool] = field(default_factory=dict)  # token -> still usable
    refreshes: int = 0
    refused_refreshes: int = 0
    removed: bool = False


class Bitrix24AppStandIn(Bitrix24StandIn):
    def __init__(
        self,
        *,
        client_id: str = "local.6a1f9c2e3b4d50.73419826",
        client_secret: str = "Zq8xT3vL0pW6nR2yK9mB4cH7jF1sD5gA",
        member_id: str = "a223c6b3710f85df22e9377d6c4f7553",
        application_token: str = "51856fefc120afa4b628cc82d3935cce",
        lines: tuple[int, ...] = (1,),
        access_ttl: float = 3600.0,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.client_id, self.client_secret = client_id, client_secret
        self.member_id, self.application_token = member_id, application_token
        self.lines = set(lines)
        self.access_ttl = access_ttl
        self.app = _App()
        self.oauth_faults: list[tuple[int, str]] = []
        # A slow auth server: a renewal waits for this gate (when set) before answering;
        # oauth_entered says a renewal is waiting at it.
        self.oauth_gate: asyncio.Event | None = None
        self.oauth_entered = asyncio.Event()
        self.connectors: dict[str, dict[str, Any]] = {}
        self.active: dict[tuple[str, int], bool] = {}
        self.connector_data: dict[tuple[str, int], dict[str, Any]] = {}
        self.bindings: list[dict[str, str]] = []
        self.sent: list[Sent] = []
        self.delivered: list[dict[str, Any]] = []  # send.status.delivery MESSAGES items
        self.app_calls: list[str] = []  # app methods as called, in order
        # The line's CRM settings as imopenlines.config.get shows them (docs' example).
        self.line_crm: dict[str, str] = {
            "CRM": "Y",
            "CRM_CREATE": "lead",
            "CRM_CREATE_SECOND": "0",
            "CRM_CHAT_TRACKER": "Y",
            "CRM_SOURCE": "create",
        }
        self._next_im = 90_000
        self._chats: dict[str, int] = {}

    # --- control ---------------------------------------------------------------------------

    @property
    def rest_base(self) -> str:
        return f"{self.url}/rest/"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_get("/oauth/token/", self._oauth)
        app.router.add_post("/rest/{method}", self._handle_app)
        app.router.add_post("/rest/{user}/{secret}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        sock_port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.url = f"http://{host}:{sock_port}"
        return self.url

    def issue(self) -> dict[str, Any]:
        """A fresh token pair, as an auth server answers it."""
        access, refresh = secrets.token_hex(16), secrets.token_hex(16)
        self.app.access[access] = time.monotonic() + self.access_ttl
        self.app.refresh[refresh] = True
        return {
            "access_token": access,
            "expires": int(time.time() + self.access_ttl),
            "expires_in": int(self.access_ttl),
            "scope": "crm,imopenlines,imconnector",
            "domain": "oauth.bitrix.info",
            "server_endpoint": f"{self.url}/rest/",
            "status": "L",
            "client_endpoint": self.rest_base,
            "member_id": self.member_id,
            "user_id": 1,
            "refresh_token": refresh,
        }

    def expire_access(self) -> None:
        """Every access token handed out so far runs out now."""
        for token in self.app.access:
            self.app.access[token] = 0.0

    def remove_app(self) -> None:
        """The application is deleted in the portal: nothing it holds works any more."""
        self.app.removed = True

    def fail_oauth(self, times: int = 1, status: int = 503, error: str = "") -> None:
        """The next `times` token requests fail (an empty error: no JSON body)."""
        self.oauth_faults += [(status, error)] * times

    def install_form(self, tokens: dict[str, Any] | None = None, **auth: Any) -> bytes:
        """ONAPPINSTALL as the install callback carries it (docs: on-app-install)."""
        issued = tokens or self.issue()
        body = {
            "event": "ONAPPINSTALL",
            "data": {"VERSION": "1", "ACTIVE": "Y", "INSTALLED": "Y", "LANGUAGE_ID": "ru"},
            "ts": str(int(time.time())),
            "auth": {
                "access_token": issued["access_token"],
                "expires": issued["expires"],
                "expires_in": issued["expires_in"],
                "scope": issued["scope"],
                "domain": "portal.example.bitrix24.ru",
                "server_endpoint": issued["server_endpoint"],
                "status": "L",
                "client_endpoint": self.rest_base,
                "member_id": self.member_id,
                "user_id": 1,
                "refresh_token": issued["refresh_token"],
                "application_token": self.application_token,
                **auth,
            },
        }
        return form_body(body)

    def event_form(self, event: str, data: Mapping[str, Any], **auth: Any) -> bytes:
        """An event to the application; `auth` overrides the fields Bitrix24 puts there."""
        body = {
            "event": event,
            "event_handler_id": "555",
            "data": data,
            "ts": str(int(time.time())),
            "auth": {
                "domain": "portal.example.bitrix24.ru",
                "client_endpoint": self.rest_base,
                "server_endpoint": "https://oauth.bitrix.info/rest/",
                "member_id": self.member_id,
                "application_token": self.application_token,
                **auth,
            },
        }
        return form_body(body)

    async def post(self, url: str, body: bytes) -> tuple[int, Any]:
        """POST a form body as Bitrix24's queue server does; (status, JSON or text)."""
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                url,
                data=body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ) as resp,
        ):
            raw = await resp.read()
            try:
                return resp.status, orjson.loads(raw)
            except orjson.JSONDecodeError:
                return resp.status, raw.decode()

    def handlers(self, event: str) -> list[str]:
        return [b["handler"] for b in self.bindings if b["event"] == event.upper()]

    # --- the OAuth server ------------------------------------------------------------------

    async def _oauth(self, request: web.Request) -> web.Response:
        q = request.query
        if self.oauth_gate is not None:
            self.oauth_entered.set()
            await self.oauth_gate.wait()
        if self.oauth_faults:
            status, error = self.oauth_faults.pop(0)
            if not error:
                return web.Response(status=status, text="Service Unavailable")
            return self._error(status, error, "")
        if q.get("client_id") != self.client_id or q.get("client_secret") != self.client_secret:
            return self._error(400, "invalid_client", "Invalid client")
        if q.get("grant_type") != "refresh_token":
            return self._error(400, "invalid_request", "Unsupported grant type")
        token = q.get("refresh_token", "")
        if self.app.removed or not self.app.refresh.get(token):
            self.app.refused_refreshes += 1
            return self._error(400, "invalid_grant", "Invalid grant")
        self.app.refresh[token] = False  # spent: the answer carries the next one
        self.app.refreshes += 1
        return web.Response(body=orjson.dumps(self.issue()), content_type="application/json")

    # --- REST as the application -----------------------------------------------------------

    def _call(
        self,
        method: str,
        params: dict[str, Any],
        totals: tuple[dict[str, int], dict[str, int], str] | None = None,
    ) -> Any:
        # The inbound-webhook path: application-only methods are refused.
        if method in APP_METHODS:
            raise MethodError(
                403,
                "WRONG_AUTH_TYPE",
                "Current authorization type is denied for this method Application context required",
            )
        return super()._call(method, params, totals)

    async def _handle_app(self, request: web.Request) -> web.Response:
        name = request.match_info["method"]
        self._drain()
        if self._level + 1 > self.burst:
            self.log.append(Logged(time.monotonic(), name, 503))
            return self._error(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
        self._level += 1
        entry = Logged(time.monotonic(), name, 200)
        self.log.append(entry)
        response = await self._serve_app(request, name)
        entry.status = response.status
        return response

    async def _serve_app(self, request: web.Request, name: str) -> web.Response:
        if not name.endswith(".json"):
            return self._error(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        method = name[:-5]
        try:
            params = await self._params(request)
        except MethodError as exc:
            return self._error(exc.status, exc.code, exc.description)
        token = str(params.pop("auth", "") or request.query.get("auth", ""))
        expires = self.app.access.get(token)
        if self.app.removed or expires is None:
            return self._error(401, "NO_AUTH_FOUND", "Wrong authorization data")
        if expires <= time.monotonic():
            return self._error(*EXPIRED)
        if self.revoked is not None:
            return self._error(401, self.revoked, "refused")
        fault = next((f for f in self.faults if f.command in (None, method)), None)
        if fault is not None and fault.when == "before":
            self.faults.remove(fault)
            return self._error(fault.status, fault.error, fault.description)
        self.app_calls.append(method)
        try:
            if method in APP_METHODS:
                result = self._app_method(method, params)
            else:
                result = super()._call(method, params)
        except MethodError as exc:
            return self._error(exc.status, exc.code, exc.description)
        if fault is not None:
            self.faults.remove(fault)
            return self._error(fault.status, fault.error, fault.description)
        hold = next((h for h in self.holds if not h.reached.is_set() and h.command == method), None)
        if hold is not None:
            hold.reached.set()
            await hold.released.wait()
        body = {"result": result, "time": {"start": time.time(), "finish": time.time()}}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    def _app_method(self, method: str, params: dict[str, Any]) -> Any:
        if method == "app.info":
            return {
                "ID": "7",
                "CODE": self.client_id,
                "VERSION": 1,
                "STATUS": "L",
                "INSTALLED": True,
                "PAYMENT_EXPIRED": "N",
                "DAYS": None,
                "LICENSE": "ru_project",
            }
        if method == "imconnector.register":
            return self._register(params)
        if method == "imopenlines.config.get":
            line = int(str(params.get("CONFIG_ID") or 0))
            if line not in self.lines:
                raise MethodError(400, "CONFIG_NOT_FOUND", "Config not found")
            return {"ID": str(line), "ACTIVE": "Y", "LINE_NAME": "Продажи", **self.line_crm}
        if method == "event.bind":
            return self._bind(params)
        if method == "event.get":
            return [dict(b, auth_type="0", offline=0) for b in self.bindings]
        if method == "event.unbind":
            event = str(params.get("event", "")).upper()
            before = len(self.bindings)
            self.bindings = [
                b
                for b in self.bindings
                if not (b["event"] == event and b["handler"] == params.get("handler"))
            ]
            return {"count": before - len(self.bindings)}
        connector, line = self._connector_line(params)
        if method == "imconnector.activate":
            active = params.get("ACTIVE")
            if active in (None, ""):
                raise MethodError(400, "ERROR_ARGUMENT", "Argument 'ACTIVE' is null or empty")
            self.active[(connector, line)] = str(active) not in ("0", "false", "N")
            return True
        if method == "imconnector.connector.data.set":
            data = params.get("DATA")
            if not isinstance(data, dict) or not data:
                raise MethodError(400, "ERROR_ARGUMENT", "Argument 'DATA' is null or empty")
            self.connector_data[(connector, line)] = data
            return True
        if method == "imconnector.status":
            active = self.active.get((connector, line), False)
            return {
                "LINE": line,
                "CONNECTOR": connector,
                "ERROR": False,
                "CONFIGURED": (connector, line) in self.connector_data,
                "STATUS": active,
            }
        if method == "imconnector.send.messages":
            return self._send_messages(connector, line, params)
        if method == "imconnector.send.status.delivery":
            return self._status_delivery(params)
        raise MethodError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")

    def _register(self, params: dict[str, Any]) -> dict[str, Any]:
        def refused(code: str, text: str) -> dict[str, Any]:
            return {"result": False, "error": code, "error_description": text}

        cid = str(params.get("ID") or "")
        if not cid:
            return refused("CONNECTOR_ID_REQUIRED", "Connector-ID nicht angegeben")
        if "." in cid:
            return refused("APPLICATION_REGISTRATION_ERROR_POINT", "The . character is prohibited")
        icon = params.get("ICON")
        if not params.get("NAME"):
            return refused("NAME_REQUIRED", "no NAME")
        if not isinstance(icon, dict) or not str(icon.get("DATA_IMAGE", "")).startswith("data:"):
            return refused("ICON_REQUIRED", "no ICON.DATA_IMAGE")
        if not params.get("PLACEMENT_HANDLER"):
            return refused("PLACEMENT_HANDLER_REQUIRED", "no PLACEMENT_HANDLER")
        self.connectors[cid.lower()] = params
        return {"result": True}

    def _bind(self, params: dict[str, Any]) -> bool:
        event = str(params.get("event", "")).upper()
        handler = str(params.get("handler", ""))
        if event not in KNOWN_EVENTS:
            raise MethodError(400, "ERROR_EVENT_NOT_FOUND", "Event not found")
        if not handler.startswith(("http://", "https://")):
            raise MethodError(400, "ERROR_CORE", "Wrong handler URL")
        if any(b["event"] == event and b["handler"] == handler for b in self.bindings):
            raise MethodError(400, "ERROR_CORE", "Handler already binded")
        self.bindings.append({"event": event, "handler": handler})
        return True

    def _connector_line(self, params: dict[str, Any]) -> tuple[str, int]:
        connector = str(params.get("CONNECTOR") or "").lower()
        if connector not in self.connectors:
            raise MethodError(400, "IMCONNECTOR_NO_CORRECT_PROVIDER", "Connector not found")
        try:
            line = int(str(params.get("LINE")))
        except ValueError:
            raise MethodError(400, "ERROR_ARGUMENT", "Argument 'LINE' is null or empty") from None
        if line not in self.lines:
            raise MethodError(400, "NOT_ACTIVE_LINE", "The line is not active")
        return connector, line

    def _send_messages(self, connector: str, line: int, params: dict[str, Any]) -> Any:
        if not self.active.get((connector, line)):
            raise MethodError(400, "NOT_ACTIVE_LINE", "The connector is not active on the line")
        messages = params.get("MESSAGES")
        if not isinstance(messages, list) or not messages:
            raise MethodError(400, "ERROR_ARGUMENT", "Argument 'MESSAGES' is null or empty")
        results = []
        for item in messages:
            user, message, chat = item.get("user"), item.get("message"), item.get("chat")
            if not all(isinstance(x, dict) for x in (user, message, chat)):
                raise MethodError(400, "ERROR_ARGUMENT", "user, message and chat are required")
            assert isinstance(user, dict) and isinstance(message, dict) and isinstance(chat, dict)
            if not user.get("id") or not chat.get("id") or not message.get("id"):
                raise MethodError(400, "ERROR_ARGUMENT", "user.id, chat.id, message.id required")
            if not message.get("text") and not message.get("files"):
                raise MethodError(400, "ERROR_ARGUMENT", "Pass either text or files")
            for key in ("name", "last_name"):
                value = str(user.get(key) or "")
                if len(value) > 25 or any(not (c.isalpha() or c in " -'") for c in value):
                    raise MethodError(400, "ERROR_ARGUMENT", f"user.{key} is not a valid name")
            im_chat = self._chats.setdefault(str(chat["id"]), 1700 + len(self._chats))
            self.sent.append(Sent(line, dict(user), dict(message), dict(chat), im_chat))
            results.append(
                {
                    "user": str(500 + len(self._chats)),
                    "message": {**message, "date": {}},
                    "chat": {"id": chat["id"], "name": chat.get("name")},
                    "extra": {"disable_tracker": message.get("disable_crm", "N")},
                    "SUCCESS": True,
                    "session": {"ID": str(300 + im_chat), "CHAT_ID": str(im_chat)},
                }
            )
        return {"SUCCESS": True, "DATA": {"RESULT": results}}

    def _status_delivery(self, params: dict[str, Any]) -> Any:
        messages = params.get("MESSAGES")
        if not isinstance(messages, list) or not messages:
            raise MethodError(400, "ERROR_ARGUMENT", "Argument 'MESSAGES' is null or empty")
        for item in messages:
            ids = (item.get("message") or {}).get("id")
            if not isinstance(ids, list) or not ids:
                # "Even for a single message, pass an array".
                raise MethodError(400, "ERROR_ARGUMENT", "message.id must be an array")
            im = item.get("im") or {}
            if not im.get("chat_id") or not im.get("message_id"):
                raise MethodError(400, "ERROR_ARGUMENT", "im.chat_id and im.message_id required")
            self.delivered.append(item)
        return {"SUCCESS": True, "DATA": []}

    # --- a seller answers in the line -----------------------------------------------------

    def next_im_message(self) -> int:
        self._next_im += 1
        return self._next_im

    def answer_form(
        self,
        chat: str,
        text: str,
        *,
        im_message_id: int | None = None,
        user_id: int = 27,
        connector: str = "leadgate",
        line: int = 1,
        **auth: Any,
    ) -> bytes:
        """A seller's answer in the line's chat for our chat `chat`, as
        OnImConnectorMessageAdd carries it (docs: on-im-connector-message-add)."""
        data = {
            "CONNECTOR": connector,
            "LINE": line,
            "MESSAGES": [
                {
                    "im": {
                        "chat_id": self._chats.get(chat, 1999),
                        "message_id": im_message_id or self.next_im_message(),
                    },
                    "message": {"user_id": user_id, "text": text},
                    "chat": {"id": chat},
                }
            ],
        }
        return self.event_form("ONIMCONNECTORMESSAGEADD", data, user_id=user_id, **auth)

    def finish_form(self, chat: str, *, connector: str = "leadgate", line: int = 1) -> bytes:
        """The line closed the dialog (docs: on-im-connector-dialog-finish)."""
        im_chat = self._chats.get(chat, 1999)
        data = {
            "CONNECTOR": connector,
            "LINE": str(line),
            "DATA": [
                {
                    "connector": {
                        "connector_id": connector,
                        "line_id": line,
                        "chat_id": chat,
                        "user_id": 0,
                    },
                    "session": {"id": 300 + im_chat, "closed": "Y", "parent_id": 0},
                    "chat": {"id": im_chat},
                    "user": {"id": 0},
                }
            ],
        }
        return self.event_form("ONIMCONNECTORDIALOGFINISH", data)

    def chat_of(self, external_chat: str) -> int:
        """The Open Lines chat id that a mirrored conversation got."""
        return self._chats[external_chat]


def params_of(body: bytes) -> dict[str, Any]:
    """A form body as the portal's PHP would read it (for assertions)."""
    return php_params(body.decode())
