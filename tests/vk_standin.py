"""A local VK stand-in: the API methods leadgate calls, and VK's side of the Callback API.

The API (`POST|GET /method/<name>`, form fields or query, `v` and `access_token`), as VK
answers it: HTTP 200 with {"response": ...} or {"error": {"error_code", "error_msg",
"request_params"}}, error_msg being the description from VK's own errors.json
(vk-api-schema 5.199, tests/connectors/fixtures/vk/vk-api-schema-errors.json) plus
": <detail>" as VK writes it ("User authorization failed: invalid access_token (4).").
- no `v`: 8; an unknown token or a revoked one: 5; a method for user tokens called with a
  community token (leadForms.*, whose schema says access_token_type ["user"]): 27;
- per token, more than `rps` calls (20 for a community token, 3 for a user token) within
  one second: 6, and the call does nothing;
- users.get (user_ids, at most 1000): known users; a deactivated page as VK shows it
  (first_name "DELETED", `deactivated`); unknown ids are left out;
- messages.send (peer_id or user_id, random_id required, message at most 9000 characters
  else 914): to a user who never allowed the community's messages 901; to one whose reply
  window has closed 950; a random_id already used by this community returns the id of the
  message sent with it, and nothing is sent again;
- leadForms.list / get / getLeads (limit 1..1000, opaque next_page_token), for the
  administrators of the group only (else 15);
- `fail(method, code)` makes the next call(s) of a method fail with any VK error (9, 29,
  10, 950, ...) before doing anything; `lose_answers(method)` does the work and then
  drops the connection (the caller cannot know it was done); `delay` holds a call before
  its work, `hold_after` after it (a caller killed then never hears of the work).

`deliver()` plays VK's Callback API: it posts an event and, unless the answer is 200 with
the body `ok`, posts the same event again with `X-Retry-Counter: n`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

ERRORS_FILE = Path(__file__).parent / "connectors/fixtures/vk/vk-api-schema-errors.json"
USER_TOKEN_METHODS = ("leadForms.",)
MAX_MESSAGE = 9000


def _descriptions() -> dict[int, str]:
    data = orjson.loads(ERRORS_FILE.read_bytes())
    return {e["code"]: e["description"] for e in data["errors"].values()}


class MethodError(Exception):
    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(code)
        self.code, self.detail = code, detail


@dataclass
class Token:
    kind: str  # "group" | "user"
    owner: int  # the group id, or the user id
    admin_of: set[int] = field(default_factory=set)  # a user token: groups it manages
    calls: deque[float] = field(default_factory=deque)


@dataclass
class Sent:
    group_id: int
    peer_id: int
    message: str
    random_id: int
    message_id: int


class VkStandIn:
    def __init__(self) -> None:
        self.descriptions = _descriptions()
        self.tokens: dict[str, Token] = {}
        self.users: dict[int, dict[str, Any]] = {}
        self.forms: dict[int, list[dict[str, Any]]] = {}  # group -> forms
        self.leads: dict[tuple[int, int], list[dict[str, Any]]] = {}  # (group, form) -> leads
        self.lead_order = "desc"  # the order getLeads pages come in: "desc" | "asc"
        self.allowed: set[tuple[int, int]] = set()  # (group, user) may be written to
        self.window_closed: set[tuple[int, int]] = set()  # (group, peer): 950
        self.sent: list[Sent] = []
        self.by_random_id: dict[tuple[int, int], int] = {}
        self.faults: deque[tuple[str, int, str]] = deque()
        self.lost: dict[str, int] = {}  # method -> answers to lose after doing the work
        self.delay: dict[str, float] = {}  # method -> seconds before doing the work
        self.hold_after: dict[str, float] = {}  # method -> seconds after it, before answering
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.rps = {"group": 20, "user": 3}
        self._message_ids = itertools.count(1001)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- control ---------------------------------------------------------------------------

    def group_token(self, token: str, group_id: int) -> None:
        self.tokens[token] = Token("group", group_id)

    def user_token(self, token: str, user_id: int, admin_of: set[int]) -> None:
        self.tokens[token] = Token("user", user_id, set(admin_of))

    def revoke(self, token: str) -> None:
        self.tokens.pop(token, None)

    def fail(self, method: str, code: int, *, times: int = 1, detail: str = "") -> None:
        for _ in range(times):
            self.faults.append((method, code, detail))

    def lose_answers(self, method: str, times: int = 1) -> None:
        """The next call(s) of `method` do their work, then the answer is lost: the
        connection is closed before a byte of it is sent (a timeout, a proxy dying)."""
        self.lost[method] = self.lost.get(method, 0) + times

    def called(self, method: str) -> list[dict[str, str]]:
        return [params for name, params in self.calls if name == method]

    async def start(self, host: str = "127.0.0.1") -> str:
        app = web.Application()
        app.router.add_route("*", "/method/{name}", self._handle)
        # Calls held by `delay` / `hold_after` are cut off at stop, not waited for.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- HTTP ------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        params = {k: v for k, v in request.query.items()}
        if request.method == "POST":
            form = await request.post()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
        self.calls.append((name, {k: v for k, v in params.items() if k != "access_token"}))
        if name in self.delay:
            await asyncio.sleep(self.delay[name])
        try:
            answer = self._json({"response": self._serve(name, params)})
        except MethodError as exc:
            return self._error(exc, name, params)
        if name in self.hold_after:
            await asyncio.sleep(self.hold_after[name])
        if self.lost.get(name):
            self.lost[name] -= 1
            assert request.transport is not None
            request.transport.close()  # the work is done; the caller never hears of it
        return answer

    def _json(self, body: Any) -> web.Response:
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    def _error(self, exc: MethodError, method: str, params: dict[str, str]) -> web.Response:
        text = self.descriptions.get(exc.code, "Unknown error occurred")
        shown = [{"key": k, "value": v} for k, v in params.items() if k != "access_token"]
        shown.append({"key": "method", "value": method})
        shown.append({"key": "oauth", "value": "1"})
        error = {
            "error_code": exc.code,
            "error_msg": f"{text}: {exc.detail}" if exc.detail else text,
            "request_params": shown,
        }
        return self._json({"error": error})

    def _serve(self, method: str, params: dict[str, str]) -> Any:
        if not params.get("v"):
            raise MethodError(8, "v (version) is required")
        token = self.tokens.get(params.get("access_token", ""))
        if token is None:
            raise MethodError(5, "invalid access_token (4).")
        now = time.monotonic()
        while token.calls and now - token.calls[0] >= 1.0:
            token.calls.popleft()
        if len(token.calls) >= self.rps[token.kind]:
            raise MethodError(6)
        token.calls.append(now)
        for i, (name, code, detail) in enumerate(self.faults):
            if name == method:
                del self.faults[i]
                raise MethodError(code, detail)
        if method.startswith(USER_TOKEN_METHODS) and token.kind != "user":
            raise MethodError(27, "method is unavailable with group auth.")
        handler = {
            "users.get": self._users_get,
            "messages.send": self._messages_send,
            "leadForms.list": self._forms_list,
            "leadForms.get": self._forms_get,
            "leadForms.getLeads": self._get_leads,
        }.get(method)
        if handler is None:
            raise MethodError(3)
        return handler(token, params)

    # --- methods ---------------------------------------------------------------------------

    def _users_get(self, token: Token, params: dict[str, str]) -> Any:
        ids = [p.strip() for p in params.get("user_ids", "").split(",") if p.strip()]
        if len(ids) > 1000:
            raise MethodError(100, "user_ids is too long")
        out = []
        for raw in ids:
            if not raw.isdigit():
                raise MethodError(113)
            user = self.users.get(int(raw))
            if user is None:
                continue
            if user.get("deactivated"):
                out.append(
                    {
                        "id": int(raw),
                        "first_name": "DELETED",
                        "last_name": "",
                        "deactivated": user["deactivated"],
                    }
                )
                continue
            out.append(
                {
                    "id": int(raw),
                    "first_name": user["first_name"],
                    "last_name": user["last_name"],
                    "can_access_closed": True,
                    "is_closed": False,
                }
            )
        return out

    def _messages_send(self, token: Token, params: dict[str, str]) -> Any:
        if token.kind != "group":
            raise MethodError(15, "messages of a community need its token")
        group = token.owner
        peer_raw = params.get("peer_id") or params.get("user_id")
        if not peer_raw or not peer_raw.lstrip("-").isdigit():
            raise MethodError(100, "peer_id is undefined")
        random_raw = params.get("random_id")
        if random_raw is None or not random_raw.lstrip("-").isdigit():
            raise MethodError(100, "random_id is a required parameter")
        message = params.get("message", "")
        if not message and not params.get("attachment"):
            raise MethodError(100, "message is empty or invalid")
        if len(message) > MAX_MESSAGE:
            raise MethodError(914)
        peer, random_id = int(peer_raw), int(random_raw)
        if (group, random_id) in self.by_random_id:
            return self.by_random_id[(group, random_id)]  # already sent: not sent again
        if (group, peer) in self.window_closed:
            raise MethodError(950)
        if peer < 2_000_000_000 and (group, peer) not in self.allowed:
            raise MethodError(901)
        message_id = next(self._message_ids)
        self.by_random_id[(group, random_id)] = message_id
        self.sent.append(Sent(group, peer, message, random_id, message_id))
        return message_id

    def _managed(self, token: Token, params: dict[str, str]) -> int:
        raw = params.get("group_id", "")
        if not raw.isdigit():
            raise MethodError(100, "group_id is undefined")
        group = int(raw)
        if group not in token.admin_of:
            raise MethodError(15)
        return group

    def _forms_list(self, token: Token, params: dict[str, str]) -> Any:
        return self.forms.get(self._managed(token, params), [])

    def _form(self, token: Token, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        group = self._managed(token, params)
        raw = params.get("form_id", "")
        found = [f for f in self.forms.get(group, []) if str(f["form_id"]) == raw]
        if not found:
            raise MethodError(104)
        return group, found[0]

    def _forms_get(self, token: Token, params: dict[str, str]) -> Any:
        return self._form(token, params)[1]

    def _get_leads(self, token: Token, params: dict[str, str]) -> Any:
        group, form = self._form(token, params)
        limit = int(params.get("limit", "10"))
        if not 1 <= limit <= 1000:
            raise MethodError(100, "limit should be between 1 and 1000")
        leads = sorted(
            self.leads.get((group, form["form_id"]), []),
            key=lambda lead: lead["lead_id"],
            reverse=self.lead_order == "desc",
        )
        token_raw = params.get("next_page_token", "")
        start = int(token_raw[4:]) if token_raw.startswith("page") else 0
        page = leads[start : start + limit]
        out: dict[str, Any] = {"leads": page}
        if start + limit < len(leads):
            out["next_page_token"] = f"page{start + limit}"
        return out


async def deliver(
    url: str, event: dict[str, Any], *, attempts: int = 3, seconds: float = 10.0
) -> list[tuple[int, str]]:
    """VK's side of the Callback API: post `event`; while the answer is not 200 `ok`, post
    it again with X-Retry-Counter. Returns every (status, body) it got."""
    answers: list[tuple[int, str]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session:
        for attempt in range(attempts):
            headers = {"Content-Type": "application/json"}
            if attempt:
                headers["X-Retry-Counter"] = str(attempt)
            async with session.post(url, data=orjson.dumps(event), headers=headers) as resp:
                answers.append((resp.status, await resp.text()))
            if answers[-1] == (200, "ok"):
                break
    return answers
