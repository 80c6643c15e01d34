"""A local Bitrix24 stand-in: enough of the REST contract to test delivery against it.

What it enforces, from the Bitrix24 REST docs:
- the inbound-webhook URL form /rest/{user_id}/{secret}/{method}.json (wrong user or secret:
  401 NO_AUTH_FOUND; `revoke()` answers every request with a chosen auth error);
- a leaky bucket per portal (burst 50, drains 2/s by default): over it, HTTP 503
  {"error": "QUERY_LIMIT_EXCEEDED"} and nothing is done; a batch counts as one request;
- `batch`: at most 50 commands (else 400 ERROR_BATCH_LENGTH_EXCEEDED), each a
  "method?query" string whose parameters must be URL-encoded PHP-style (fields[TITLE]=..);
  answers result.result / result.result_error keyed by command (empty ones as [] like PHP),
  plus result_total / result_next for list methods;
- crm.lead.add / update / list / get, crm.timeline.comment.add / list,
  crm.duplicate.findbycomm with their documented parameters; errors as
  {"error": ..., "error_description": ...};
- list filters with the documented prefixes (=, !, !=, @, !@, and LIKE: % substring,
  =% / %= with the % in the value, !% / !=% / !%= their negations, case-insensitive);
  `select` "*" gives every field but the multifields (PHONE, EMAIL, ...) and UF_*, which
  are named or "UF_*";
- multifields (PHONE, EMAIL) come back as [{ID, VALUE_TYPE, VALUE, TYPE_ID}]; on
  crm.lead.update an item with an ID changes that value (an empty VALUE deletes it), an
  item without one is added, values not mentioned stay;
- STATUS_SEMANTIC_ID follows STATUS_ID (CONVERTED "S", JUNK "F", others "P");
  `set_status()` plays a seller moving a lead on.
It can fail on purpose, before or after doing the work (`fail`; "{path}" in its texts echoes
the request path, secret and all), or hold an answer after
the work is done until released (`hold`) so a test can kill the client mid-delivery.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

_ENCODED_QUERY = re.compile(r"[A-Za-z0-9\-._~%\[\]=&+]*")
_METHOD = re.compile(r"[a-z0-9_.]+")
_KEY = re.compile(r"([^\[]+)((?:\[[^\]]*\])*)")
AUTH_ERRORS = {
    "NO_AUTH_FOUND": (401, "Wrong authorization data"),
    "expired_token": (401, "The access token provided has expired"),
    "INVALID_CREDENTIALS": (403, "Invalid request credentials"),
    "insufficient_scope": (403, "The request requires higher privileges"),
}


class MethodError(Exception):
    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(code)
        self.status, self.code, self.description = status, code, description


@dataclass
class Fault:
    when: str  # "before" (nothing done) | "after" (work done, answer lost)
    status: int
    error: str
    description: str
    command: str | None  # only requests that carry this method (in a batch or alone)


@dataclass
class Hold:
    """The next matching request does its work, then waits for release() before answering."""

    command: str | None
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self.released.set()


@dataclass
class Logged:
    at: float
    method: str
    status: int
    commands: int = 0
    created: int = 0


def php_params(query: str) -> dict[str, Any]:
    """parse_str(): fields[PHONE][0][VALUE]=x -> {"fields": {"PHONE": [{"VALUE": "x"}]}}."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        m = _KEY.fullmatch(key)
        if m is None:
            raise MethodError(400, "INVALID_REQUEST", f"bad parameter name {key!r}")
        path = [m.group(1), *re.findall(r"\[([^\]]*)\]", m.group(2))]
        node = root
        for i, part in enumerate(path[:-1]):
            if part == "":
                part = str(len(node))
                path[i] = part
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise MethodError(400, "INVALID_REQUEST", f"conflicting parameter {key!r}")
        last = path[-1] if path[-1] != "" else str(len(node))
        node[last] = value
    return _lists(root)


def _lists(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _lists(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
    return node


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


class Bitrix24StandIn:
    def __init__(
        self,
        *,
        user: str = "7",
        secret: str = "standin-secret-9d1c",
        burst: int = 50,
        rate: float = 2.0,
        latency: float = 0.0,
    ) -> None:
        self.user, self.secret = user, secret
        self.burst, self.rate = burst, rate
        self.latency = latency
        self.leads: dict[int, dict[str, Any]] = {}
        self.lead_times: dict[int, float] = {}
        self.comments: dict[int, dict[str, Any]] = {}
        self.contacts: dict[int, dict[str, Any]] = {}
        self.companies: dict[int, dict[str, Any]] = {}
        self.log: list[Logged] = []
        self.faults: deque[Fault] = deque()
        self.command_faults: deque[tuple[str, str, str]] = deque()
        self.holds: list[Hold] = []
        self.revoked: str | None = None
        self.unencoded: int = 0
        self._next_id = 1
        self._next_multi = 1001
        self._level = 0.0
        self._stamp = time.monotonic()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- control ---------------------------------------------------------------------------

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/rest/{self.user}/{self.secret}/"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
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

    async def stop(self) -> None:
        for hold in self.holds:
            hold.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def fail(
        self,
        times: int = 1,
        *,
        when: str = "before",
        status: int = 500,
        error: str = "INTERNAL_SERVER_ERROR",
        description: str = "Internal server error",
        command: str | None = None,
    ) -> None:
        for _ in range(times):
            self.faults.append(Fault(when, status, error, description, command))

    def fail_command(
        self, method: str, error: str = "ERROR_CORE", description: str = "", times: int = 1
    ) -> None:
        """Inside a batch, answer the next `times` commands of `method` in result_error."""
        for _ in range(times):
            self.command_faults.append((method, error, description))

    def hold(self, command: str | None = None) -> Hold:
        hold = Hold(command)
        self.holds.append(hold)
        return hold

    def revoke(self, code: str | None = "NO_AUTH_FOUND") -> None:
        """Refuse every request with an auth error (None: accept again)."""
        self.revoked = code

    def fill_bucket(self) -> None:
        self._drain()
        self._level = float(self.burst)

    def set_status(self, lead_id: int, status_id: str, semantic: str | None = None) -> None:
        """A seller moves the lead on (CONVERTED, JUNK, or a portal's own status)."""
        lead = self.leads[lead_id]
        lead["STATUS_ID"] = status_id
        lead["STATUS_SEMANTIC_ID"] = semantic or _SEMANTIC.get(status_id, "P")

    def next_id(self) -> int:
        value = self._next_id
        self._next_id += 1
        return value

    # --- views for tests -------------------------------------------------------------------

    def by_origin(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for lead_id, fields in self.leads.items():
            if fields.get("ORIGIN_ID"):
                out.setdefault(str(fields["ORIGIN_ID"]), []).append(lead_id)
        return out

    def comments_on(self, lead_id: int) -> list[str]:
        return [
            str(c["COMMENT"])
            for c in self.comments.values()
            if c["ENTITY_ID"] == lead_id and c["ENTITY_TYPE"] == "lead"
        ]

    def count(self, status: int) -> int:
        return sum(1 for entry in self.log if entry.status == status)

    # --- HTTP ------------------------------------------------------------------------------

    def _drain(self) -> None:
        now = time.monotonic()
        self._level = max(0.0, self._level - (now - self._stamp) * self.rate)
        self._stamp = now

    def _error(self, status: int, code: str, description: str) -> web.Response:
        return web.Response(
            status=status,
            body=orjson.dumps({"error": code, "error_description": description}),
            content_type="application/json",
        )

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.match_info["method"]
        self._drain()
        if self._level + 1 > self.burst:
            self.log.append(Logged(time.monotonic(), name, 503))
            return self._error(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
        self._level += 1
        entry = Logged(time.monotonic(), name, 200)
        self.log.append(entry)
        response = await self._serve(request, name, entry)
        entry.status = response.status
        return response

    async def _serve(self, request: web.Request, name: str, entry: Logged) -> web.Response:
        if request.match_info["user"] != self.user or request.match_info["secret"] != self.secret:
            return self._error(401, "NO_AUTH_FOUND", "Wrong authorization data")
        if self.revoked is not None:
            status, text = AUTH_ERRORS.get(self.revoked, (401, "refused"))
            return self._error(status, self.revoked, text)
        if not name.endswith(".json") or not _METHOD.fullmatch(name[:-5]):
            return self._error(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        method = name[:-5]
        try:
            params = await self._params(request)
        except MethodError as exc:
            return self._error(exc.status, exc.code, exc.description)
        carried = self._carried(method, params)
        fault = next((f for f in self.faults if f.command is None or f.command in carried), None)
        if fault is not None:
            self.faults.remove(fault)
            if fault.when == "before":
                # "{path}" in a fault plays a server that echoes the request path (with the
                # webhook's secret in it) in its error, as proxies and PHP errors do.
                return self._error(
                    fault.status,
                    fault.error.replace("{path}", request.raw_path),
                    fault.description.replace("{path}", request.raw_path),
                )
        if self.latency:
            # A real portal takes from a few hundred ms to seconds per batch; the work is
            # done at the end of it (the lead exists when the answer leaves).
            await asyncio.sleep(self.latency)
        before = len(self.leads)  # after the wait: requests in flight together count apart
        try:
            result = self._batch(params) if method == "batch" else self._call(method, params)
        except MethodError as exc:
            return self._error(exc.status, exc.code, exc.description)
        entry.commands = len(params.get("cmd") or {}) if method == "batch" else 1
        entry.created = len(self.leads) - before
        if fault is not None:
            return self._error(fault.status, fault.error, fault.description)
        hold = next(
            (
                h
                for h in self.holds
                if not h.reached.is_set() and (h.command in carried or h.command is None)
            ),
            None,
        )
        if hold is not None:
            hold.reached.set()
            await hold.released.wait()
        body = {"result": result, "time": {"start": time.time(), "finish": time.time()}}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _params(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw:
            return {}
        if request.content_type == "application/json":
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise MethodError(400, "INVALID_REQUEST", "body is not JSON") from None
            if not isinstance(data, dict):
                raise MethodError(400, "INVALID_REQUEST", "body is not an object")
            return data
        return php_params(raw.decode())

    def _carried(self, method: str, params: dict[str, Any]) -> set[str]:
        if method != "batch":
            return {method}
        cmds = params.get("cmd")
        return {str(c).split("?", 1)[0] for c in cmds.values()} if isinstance(cmds, dict) else set()

    # --- batch -----------------------------------------------------------------------------

    def _batch(self, params: dict[str, Any]) -> dict[str, Any]:
        cmds = params.get("cmd")
        if not isinstance(cmds, dict) or not cmds:
            raise MethodError(400, "INVALID_REQUEST", "cmd is required")
        if len(cmds) > 50:
            raise MethodError(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
        halt = str(params.get("halt", 0)) in ("1", "true", "True")
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        totals: dict[str, int] = {}
        nexts: dict[str, int] = {}
        for key, cmd in cmds.items():
            method, _, query = str(cmd).partition("?")
            try:
                if method == "batch":
                    raise MethodError(
                        405,
                        "ERROR_BATCH_METHOD_NOT_ALLOWED",
                        "Method is not allowed for batch usage",
                    )
                fault = next((f for f in self.command_faults if f[0] == method), None)
                if fault is not None:
                    self.command_faults.remove(fault)
                    raise MethodError(400, fault[1], fault[2])
                if not _ENCODED_QUERY.fullmatch(query):
                    self.unencoded += 1
                    raise MethodError(
                        400, "INVALID_REQUEST", "command parameters are not URL-encoded"
                    )
                value = self._call(method, php_params(query), totals=(totals, nexts, key))
            except MethodError as exc:
                errors[key] = {"error": exc.code, "error_description": exc.description}
                if halt:
                    break
                continue
            results[key] = value
        # PHP encodes an empty array as [], not {}.
        return {
            "result": results or [],
            "result_error": errors or [],
            "result_total": totals or [],
            "result_next": nexts or [],
            "result_time": [],
        }

    # --- methods ---------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        params: dict[str, Any],
        totals: tuple[dict[str, int], dict[str, int], str] | None = None,
    ) -> Any:
        handlers = {
            "crm.lead.add": self._lead_add,
            "crm.lead.update": self._lead_update,
            "crm.lead.get": self._lead_get,
            "crm.lead.list": self._lead_list,
            "crm.timeline.comment.add": self._comment_add,
            "crm.timeline.comment.list": self._comment_list,
            "crm.duplicate.findbycomm": self._findbycomm,
        }
        handler = handlers.get(method)
        if handler is None:
            raise MethodError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        result = handler(params)
        if isinstance(result, _Page):
            if totals is not None:
                totals[0][totals[2]] = result.total
                if result.next is not None:
                    totals[1][totals[2]] = result.next
            return result.rows
        return result

    def _lead_add(self, params: dict[str, Any]) -> int:
        fields = params.get("fields")
        if not isinstance(fields, dict) or not fields:
            raise MethodError(400, "ERROR_CORE", "fields are required")
        for multi in ("PHONE", "EMAIL"):
            values = fields.get(multi, [])
            if not isinstance(values, list) or not all(
                isinstance(v, dict) and v.get("VALUE") for v in values
            ):
                raise MethodError(
                    400, "ERROR_CORE", f"{multi} must be a list of {{VALUE, VALUE_TYPE}}"
                )
        lead_id = self.next_id()
        stored = {k: v for k, v in fields.items() if k not in _MULTI}
        for multi in _MULTI:
            if multi in fields:
                stored[multi] = self._multi([], fields[multi], multi)
        stored["ID"] = lead_id
        stored.setdefault("STATUS_ID", "NEW")
        stored["STATUS_SEMANTIC_ID"] = _SEMANTIC.get(str(stored["STATUS_ID"]), "P")
        self.leads[lead_id] = stored
        self.lead_times[lead_id] = time.monotonic()
        return lead_id

    def _lead_update(self, params: dict[str, Any]) -> bool:
        try:
            lead_id = int(str(params.get("id", "")))
        except ValueError:
            raise MethodError(400, "ERROR_CORE", "ID is not defined or invalid") from None
        lead = self.leads.get(lead_id)
        if lead is None:
            raise MethodError(400, "NOT_FOUND", "Not found")
        fields = params.get("fields")
        if not isinstance(fields, dict):
            raise MethodError(400, "ERROR_CORE", "fields are required")
        for key, value in fields.items():
            if key in _MULTI:
                lead[key] = self._multi(lead.get(key) or [], value, key)
            elif key not in ("ID", "STATUS_SEMANTIC_ID"):
                lead[key] = value
        if "STATUS_ID" in fields:
            lead["STATUS_SEMANTIC_ID"] = _SEMANTIC.get(str(fields["STATUS_ID"]), "P")
        return True

    def _multi(self, have: list[dict[str, Any]], given: Any, type_id: str) -> list[dict[str, Any]]:
        """Bitrix24's multifield rules: with an ID change (or, with an empty VALUE, delete)
        that value; without one add it; values not mentioned stay."""
        items = list(given.values()) if isinstance(given, dict) else given
        if not isinstance(items, list) or not all(isinstance(v, dict) for v in items):
            raise MethodError(
                400, "ERROR_CORE", f"{type_id} must be a list of {{VALUE, VALUE_TYPE}}"
            )
        out = [dict(v) for v in have]
        for item in items:
            if item.get("ID"):
                found = next((v for v in out if str(v.get("ID")) == str(item["ID"])), None)
                if found is None:
                    continue
                if not item.get("VALUE"):
                    out.remove(found)
                else:
                    found.update({k: item[k] for k in ("VALUE", "VALUE_TYPE") if k in item})
            elif item.get("VALUE"):
                value_id = self._next_multi
                self._next_multi += 1
                out.append(
                    {
                        "ID": str(value_id),
                        "VALUE_TYPE": item.get("VALUE_TYPE") or "WORK",
                        "VALUE": item["VALUE"],
                        "TYPE_ID": type_id,
                    }
                )
        return out

    def _lead_get(self, params: dict[str, Any]) -> dict[str, Any]:
        lead = self.leads.get(int(str(params.get("id", "0")) or 0))
        if lead is None:
            raise MethodError(400, "NOT_FOUND", "Not found")
        return {k: (str(v) if k == "ID" else v) for k, v in lead.items()}

    def _lead_list(self, params: dict[str, Any]) -> _Page:
        flt = params.get("filter") or {}
        if not isinstance(flt, dict):
            raise MethodError(400, "INVALID_FILTER", "filter must be an object")
        rows = [lead for lead in self.leads.values() if _matches(lead, flt)]
        return _page(rows, params)

    def _comment_add(self, params: dict[str, Any]) -> int:
        fields = params.get("fields")
        if not isinstance(fields, dict):
            raise MethodError(400, "ERROR_CORE", "fields are required")
        entity_type = fields.get("ENTITY_TYPE")
        if entity_type not in ("lead", "deal", "contact", "company", "order"):
            raise MethodError(400, "ERROR_CORE", "ENTITY_TYPE is required (lead, deal, ...)")
        try:
            entity_id = int(str(fields.get("ENTITY_ID")))
        except ValueError:
            raise MethodError(400, "ERROR_CORE", "ENTITY_ID is required") from None
        if entity_type == "lead" and entity_id not in self.leads:
            raise MethodError(400, "NOT_FOUND", f"lead {entity_id} not found")
        if not fields.get("COMMENT"):
            raise MethodError(400, "ERROR_CORE", "COMMENT is required")
        comment_id = self.next_id()
        self.comments[comment_id] = {
            "ID": comment_id,
            "ENTITY_ID": entity_id,
            "ENTITY_TYPE": entity_type,
            "COMMENT": fields["COMMENT"],
        }
        return comment_id

    def _comment_list(self, params: dict[str, Any]) -> _Page:
        flt = params.get("filter") or {}
        if not isinstance(flt, dict) or "ENTITY_ID" not in flt or "ENTITY_TYPE" not in flt:
            raise MethodError(400, "ERROR_CORE", "filter needs ENTITY_ID and ENTITY_TYPE")
        rows = [c for c in self.comments.values() if _matches(c, flt)]
        return _page(rows, params)

    def _findbycomm(self, params: dict[str, Any]) -> Any:
        kind = params.get("type")
        if kind not in ("PHONE", "EMAIL"):
            raise MethodError(400, "ERROR_CORE", "Communication type is not defined")
        values = params.get("values")
        if not isinstance(values, list) or not values:
            raise MethodError(400, "ERROR_CORE", "Communication values is not defined")
        if len(values) > 20:
            raise MethodError(400, "ERROR_CORE", "Too many values (max 20)")

        def norm(v: str) -> str:
            return _digits(v) if kind == "PHONE" else v.strip().lower()

        wanted = {norm(str(v)) for v in values}
        entity = params.get("entity_type")
        found: dict[str, list[int]] = {}
        for name, table in (
            ("LEAD", self.leads),
            ("CONTACT", self.contacts),
            ("COMPANY", self.companies),
        ):
            if entity not in (None, name):
                continue
            ids = [
                item_id
                for item_id, item in table.items()
                if any(norm(str(m.get("VALUE", ""))) in wanted for m in item.get(kind, []))
            ]
            if ids:
                found[name] = sorted(ids)
        return found or []


_MULTI = ("PHONE", "EMAIL", "WEB", "IM")
_SEMANTIC = {"CONVERTED": "S", "JUNK": "F"}


@dataclass
class _Page:
    rows: list[dict[str, Any]]
    total: int
    next: int | None


def _page(rows: list[dict[str, Any]], params: dict[str, Any]) -> _Page:
    order = params.get("order") or {}
    desc = isinstance(order, dict) and str(order.get("ID", "ASC")).upper() == "DESC"
    rows = sorted(rows, key=lambda r: int(r["ID"]), reverse=desc)
    start = int(str(params.get("start", 0) or 0))
    select = params.get("select") or ["*"]
    page = rows[start : start + 50]
    out = []
    for row in page:
        picked: dict[str, Any] = {}
        if "*" in select:  # every field but the multifields and the custom ones
            picked.update(
                {k: v for k, v in row.items() if k not in _MULTI and not k.startswith("UF_")}
            )
        if "UF_*" in select:
            picked.update({k: v for k, v in row.items() if k.startswith("UF_")})
        picked.update({k: row.get(k) for k in select if "*" not in k})
        picked["ID"] = str(row["ID"])
        out.append(picked)
    nxt = start + 50 if start + 50 < len(rows) else None
    return _Page(out, len(rows), nxt)


def _like(pattern: str, value: str) -> bool:
    """SQL LIKE (% any run, _ one character), case-insensitive as MySQL's collation."""
    regex = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL) is not None


def _matches(row: dict[str, Any], flt: dict[str, Any]) -> bool:
    for raw_key, wanted in flt.items():
        m = re.fullmatch(r"(!%=|!=%|=%|%=|!%|%|>=|<=|!=|!@|@|=|!|>|<)?(.+)", str(raw_key))
        assert m is not None
        op, key = m.group(1) or "=", m.group(2)
        have = row.get(key)
        have_s = "" if have is None else str(have)
        if "%" in op:
            # "%": the value is a substring; "=%" / "%=": the value is a LIKE pattern.
            pattern = f"%{wanted}%" if op in ("%", "!%") else str(wanted)
            if _like(pattern, have_s) == op.startswith("!"):
                return False
        elif op in ("@", "!@"):
            values = wanted if isinstance(wanted, list) else [wanted]
            inside = have_s in {str(v) for v in values}
            if inside != (op == "@"):
                return False
        elif op == "=":
            if have_s != str(wanted):
                return False
        elif op in ("!", "!="):
            if have_s == str(wanted):
                return False
        else:
            raise MethodError(400, "INVALID_FILTER", f"operator {op} not supported by the stand-in")
    return True
