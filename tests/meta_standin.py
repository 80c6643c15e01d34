"""A local Graph API stand-in: the part of Meta's contract leadgate calls, failures included.

What it serves, as Meta documents it (docs/channels/meta.md names the pages):
- `GET /{version}/{leadgen_id}` with a Page token: the lead as Retrieving Leads shows it
  (`{created_time: "2015-02-28T08:49:14+0000", id, ad_id, form_id, field_data: [{name,
  values: [...]}]}`); an id it does not know (or a lead of another Page) is the Graph's
  "Unsupported get request" (100/33). `lead_appears_after()` plays a lead that is not
  readable at once.
- `GET /{version}/{PSID|IGSID}?fields=...`: a person's profile, only the fields asked for.
- `POST /{version}/me/messages` (Page token; Messenger, and Instagram through the Page) and
  `POST /{version}/{ig account id}/messages` (Instagram Login token): the Send API. It
  checks the body (recipient.id, messaging_type RESPONSE | UPDATE | MESSAGE_TAG with a
  tag, message.text of at most 2000 characters, for Instagram under 1000 bytes) and the
  messaging window: RESPONSE within 24 h of the person's last
  message (7 days when that message followed a click on the ad), MESSAGE_TAG HUMAN_AGENT
  within 7 days; outside it answers 10/2018278 (Instagram: 10/2534022). Answers
  `{"recipient_id", "message_id"}`.
- Tokens: an unknown one is OAuthException 190; `revoke()` makes a known one so.
Errors are Meta's shape `{"error": {"message", "type", "code", "error_subcode",
"fbtrace_id"}}`, taken from ERRORS: a table of data, so a test (or a later finding about
Meta's codes) changes a row, not code. `fail()` queues any of them for the next matching
calls; `limit()` turns on a call budget per token that answers a rate-limit error past it;
`hold` keeps profile reads waiting (for kill tests); `lose_answers()` makes the next sends
deliver and then drop the connection before answering (a timeout, a proxy dying).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

DAY = 24 * 3600.0


@dataclass(frozen=True)
class GraphFault:
    status: int
    code: int
    message: str
    type: str = "OAuthException"
    subcode: int | None = None

    def body(self, **fill: str) -> dict[str, Any]:
        err: dict[str, Any] = {
            "message": self.message.format(**fill) if fill else self.message,
            "type": self.type,
            "code": self.code,
        }
        if self.subcode is not None:
            err["error_subcode"] = self.subcode
        err["fbtrace_id"] = secrets.token_urlsafe(8)
        return {"error": err}


# Where the wording is Meta's published text, it is quoted; the rest is the usual Graph
# "(#code) text" form (see tests/connectors/fixtures/meta/SOURCES.md for what is published).
ERRORS: dict[str, GraphFault] = {
    # Messenger error-codes page, "Example Error Response" (subcode there is a placeholder).
    "invalid_token": GraphFault(400, 190, "Invalid OAuth access token."),
    # Graph error-handling guide: 190/460 password changed, 190/463 expired.
    "password_changed": GraphFault(400, 190, "Error validating access token.", subcode=460),
    "token_expired": GraphFault(
        400, 190, "Error validating access token: Session has expired.", subcode=463
    ),
    # Graph error-handling guide: a call without (or with a wrong) appsecret_proof when the
    # app requires it.
    "invalid_proof": GraphFault(400, 100, "Invalid appsecret_proof provided in the API argument"),
    "permission": GraphFault(403, 10, "(#10) Application does not have permission for this action"),
    "permission_200": GraphFault(403, 200, "(#200) Requires pages_messaging permission"),
    "app_rate": GraphFault(400, 4, "(#4) Application request limit reached"),
    "user_rate": GraphFault(400, 17, "(#17) User request limit reached"),
    "page_rate": GraphFault(400, 32, "(#32) Page request limit reached"),
    "call_rate": GraphFault(400, 613, "(#613) Calls to this api have exceeded the rate limit."),
    "invalid_parameter": GraphFault(400, 100, "(#100) Invalid parameter"),
    "unknown_object": GraphFault(
        400,
        100,
        "Unsupported get request. Object with ID '{id}' does not exist, cannot be loaded due "
        "to missing permissions, or does not support this operation.",
        type="GraphMethodException",
        subcode=33,
    ),
    "unavailable": GraphFault(
        400, 551, "(#551) This person isn't available right now.", subcode=1545041
    ),
    "outside_window": GraphFault(
        400,
        10,
        "(#10) This message is sent outside of allowed window.",
        subcode=2018278,
    ),
    "outside_window_instagram": GraphFault(
        400, 10, "(#10) This message is sent outside of allowed window.", subcode=2534022
    ),
    # Messenger error-codes page: "2 An unexpected error has occurred. Please retry your
    # request later."
    "unexpected": GraphFault(
        500, 2, "An unexpected error has occurred. Please retry your request later."
    ),
    "unknown": GraphFault(500, 1, "An unknown error occurred"),
}

_VERSION = re.compile(r"^v[0-9]+\.[0-9]+$")
MESSAGING_TYPES = ("RESPONSE", "UPDATE", "MESSAGE_TAG")
TAGS = {"HUMAN_AGENT": 7 * DAY, "ACCOUNT_UPDATE": None, "CONFIRMED_EVENT_UPDATE": None}


@dataclass
class Fault:
    method: str | None  # GET / POST, None: any
    path: re.Pattern[str] | None  # matched against the path after the version
    fault: GraphFault
    raw: bytes | None = None  # a non-JSON answer instead (a proxy's HTML page)


@dataclass
class Sent:
    account: str
    recipient: str
    body: dict[str, Any]
    message_id: str
    at: float

    @property
    def text(self) -> str | None:
        msg = self.body.get("message")
        return msg.get("text") if isinstance(msg, dict) else None


@dataclass
class Call:
    method: str
    path: str
    account: str | None
    status: int
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class Budget:
    calls: int
    per_seconds: float
    fault: GraphFault
    used: deque[float] = field(default_factory=deque)


class MetaGraphStandIn:
    def __init__(self, version: str = "v25.0") -> None:
        self.version = version
        self.tokens: dict[str, str] = {}  # token -> account id (Page or Instagram account)
        self.instagram_login: set[str] = set()  # accounts whose token is an Instagram one
        self.revoked: set[str] = set()
        # With an app secret, every call to a Page account must carry its appsecret_proof
        # ("Require App Secret" in the app's settings) and a wrong one is refused.
        self.app_secret: str | None = None
        self.leads: dict[str, dict[str, Any]] = {}
        self.lead_page: dict[str, str] = {}
        self.hidden_reads: dict[str, int] = {}  # lead id -> reads that still see nothing
        self.profiles: dict[str, dict[str, Any]] = {}
        self.private_profiles: set[str] = set()  # profile reads refused (no permission)
        self.last_message: dict[tuple[str, str], float] = {}  # (account, person) -> time
        self.ad_clicks: set[tuple[str, str]] = set()  # last message followed an ad click
        self.unavailable: set[str] = set()  # people who cannot be messaged (551)
        self.instagram_people: set[str] = set()  # IGSIDs: their window error is Instagram's
        self.faults: deque[Fault] = deque()
        self.budgets: dict[str, Budget] = {}
        self.sent: list[Sent] = []
        self.calls: list[Call] = []
        self.clock: Callable[[], float] = time.time
        # Profile reads wait for `hold` while it is set up and not yet released; `held` is
        # set when one waits (a test can kill the caller right there).
        self.hold: asyncio.Event | None = None
        self.held = asyncio.Event()
        self.lost_answers = 0  # sends still to deliver and then leave unanswered
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- control ---------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_get("/{version}/{object_id}", self._get)
        app.router.add_post("/{version}/me/messages", self._send)
        app.router.add_post("/{version}/{account}/messages", self._send)
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
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def account(self, account_id: str, token: str, *, instagram_login: bool = False) -> None:
        self.tokens[token] = account_id
        if instagram_login:
            self.instagram_login.add(account_id)

    def revoke(self, token: str) -> None:
        self.revoked.add(token)

    def add_lead(
        self,
        page_id: str,
        lead: dict[str, Any],
        *,
        lead_id: str | None = None,
    ) -> str:
        """A lead as Retrieving Leads shows it; its id is `lead_id` or the one in `lead`."""
        lead_id = lead_id or str(lead["id"])
        self.leads[lead_id] = {**lead, "id": lead_id}
        self.lead_page[lead_id] = page_id
        return lead_id

    def lead_appears_after(self, lead_id: str, reads: int) -> None:
        """The first `reads` reads of this lead answer "does not exist" (100/33)."""
        self.hidden_reads[lead_id] = reads

    def person(
        self,
        person_id: str,
        profile: dict[str, Any],
        *,
        account: str | None = None,
        wrote_at: float | None = None,
        via_ad: bool = False,
        instagram: bool = False,
    ) -> None:
        """A person who can be asked about (and, with `account` — the account of the token
        that will answer them — wrote to it at `wrote_at`)."""
        self.profiles[person_id] = {"id": person_id, **profile}
        if instagram:
            self.instagram_people.add(person_id)
        if account is not None:
            self.wrote(account, person_id, at=wrote_at, via_ad=via_ad)

    def wrote(
        self, account: str, person_id: str, *, at: float | None = None, via_ad: bool = False
    ) -> None:
        """The person's last message to the account (what opens the messaging window)."""
        key = (account, person_id)
        self.last_message[key] = self.clock() if at is None else at
        if via_ad:
            self.ad_clicks.add(key)
        else:
            self.ad_clicks.discard(key)

    def fail(
        self,
        error: str,
        times: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        raw: bytes | None = None,
    ) -> None:
        """The next `times` matching calls answer ERRORS[error] (or `raw` bytes with its
        HTTP status: a proxy's error page)."""
        pattern = re.compile(path) if path is not None else None
        for _ in range(times):
            self.faults.append(Fault(method, pattern, ERRORS[error], raw))

    def limit(self, token: str, calls: int, per_seconds: float, error: str = "page_rate") -> None:
        self.budgets[token] = Budget(calls, per_seconds, ERRORS[error])

    def lose_answers(self, times: int = 1) -> None:
        """The next `times` sends reach the person, then the connection closes unanswered."""
        self.lost_answers += times

    def count(self, method: str, path_prefix: str = "") -> int:
        return sum(1 for c in self.calls if c.method == method and c.path.startswith(path_prefix))

    # --- serving ---------------------------------------------------------------------------

    def _error(self, fault: GraphFault, **fill: str) -> web.Response:
        return web.Response(
            status=fault.status,
            body=orjson.dumps(fault.body(**fill)),
            content_type="application/json",
        )

    def _gate(self, request: web.Request, path: str) -> tuple[str | None, web.Response | None]:
        """Version, queued faults, token, budget: (account, refusal)."""
        version = request.match_info["version"]
        if not _VERSION.fullmatch(version):
            return None, self._error(ERRORS["invalid_parameter"])
        for fault in list(self.faults):
            if (fault.method is None or fault.method == request.method) and (
                fault.path is None or fault.path.search(path)
            ):
                self.faults.remove(fault)
                if fault.raw is not None:
                    return None, web.Response(
                        status=fault.fault.status, body=fault.raw, content_type="text/html"
                    )
                return None, self._error(fault.fault, id=path)
        token = request.query.get("access_token", "")
        account = self.tokens.get(token)
        if account is None or token in self.revoked:
            return None, self._error(ERRORS["invalid_token"])
        if self.app_secret is not None and account not in self.instagram_login:
            proof = hmac.new(self.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
            if request.query.get("appsecret_proof") != proof:
                return None, self._error(ERRORS["invalid_proof"])
        budget = self.budgets.get(token)
        if budget is not None:
            now = self.clock()
            while budget.used and budget.used[0] <= now - budget.per_seconds:
                budget.used.popleft()
            if len(budget.used) >= budget.calls:
                return account, self._error(budget.fault)
            budget.used.append(now)
        return account, None

    def _log(self, request: web.Request, path: str, account: str | None, status: int) -> None:
        hidden = ("access_token", "appsecret_proof")
        params = {k: v for k, v in request.query.items() if k not in hidden}
        self.calls.append(Call(request.method, path, account, status, params))

    async def _get(self, request: web.Request) -> web.Response:
        object_id = request.match_info["object_id"]
        if self.hold is not None and not self.hold.is_set() and object_id in self.profiles:
            self.held.set()
            await self.hold.wait()
        account, refusal = self._gate(request, object_id)
        response = refusal or self._read(object_id, account or "", request.query.get("fields"))
        self._log(request, object_id, account, response.status)
        return response

    def _read(self, object_id: str, account: str, fields: str | None) -> web.Response:
        if object_id in self.leads and self.lead_page.get(object_id) == account:
            hidden = self.hidden_reads.get(object_id, 0)
            if hidden > 0:
                self.hidden_reads[object_id] = hidden - 1
                return self._error(ERRORS["unknown_object"], id=object_id)
            return web.json_response(self.leads[object_id])
        if object_id in self.profiles:
            if object_id in self.private_profiles:
                return self._error(ERRORS["permission_200"])
            profile = self.profiles[object_id]
            wanted = [f for f in (fields or "").split(",") if f]
            shown = {k: v for k, v in profile.items() if not wanted or k in wanted or k == "id"}
            return web.json_response(shown)
        return self._error(ERRORS["unknown_object"], id=object_id)

    async def _send(self, request: web.Request) -> web.Response:
        path = request.path.split("/", 2)[2]
        account, refusal = self._gate(request, path)
        response = refusal or await self._deliver(request, account or "")
        self._log(request, path, account, response.status)
        if response.status == 200 and self.lost_answers:
            self.lost_answers -= 1
            assert request.transport is not None
            request.transport.close()  # delivered; the caller never hears of it
        return response

    async def _deliver(self, request: web.Request, account: str) -> web.Response:
        named = request.match_info.get("account")
        if named is not None and (named != account or account not in self.instagram_login):
            return self._error(ERRORS["unknown_object"], id=f"{named}/messages")
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self._error(ERRORS["invalid_parameter"])
        if not isinstance(body, dict):
            return self._error(ERRORS["invalid_parameter"])
        recipient = body.get("recipient")
        person = recipient.get("id") if isinstance(recipient, dict) else None
        message = body.get("message")
        kind = body.get("messaging_type", "RESPONSE")
        tag = body.get("tag")
        if (
            not isinstance(person, str)
            or not isinstance(message, dict)
            or not isinstance(message.get("text"), str)
            or not 0 < len(message["text"]) <= 2000
            or kind not in MESSAGING_TYPES
            or (kind == "MESSAGE_TAG") != (tag is not None)
            or (tag is not None and tag not in TAGS)
        ):
            return self._error(ERRORS["invalid_parameter"])
        # Instagram takes under 1000 bytes of text (Messenger: 2000 characters, above).
        if (person in self.instagram_people or account in self.instagram_login) and len(
            message["text"].encode()
        ) > 1000:
            return self._error(ERRORS["invalid_parameter"])
        if person in self.unavailable:
            return self._error(ERRORS["unavailable"])
        last = self.last_message.get((account, person))
        if last is None:
            return self._error(ERRORS["unavailable"])
        age = self.clock() - last
        if kind == "MESSAGE_TAG":
            allowed = TAGS[tag]
        else:
            allowed = 7 * DAY if (account, person) in self.ad_clicks else DAY
        if kind == "UPDATE" or (allowed is not None and age > allowed):
            instagram = person in self.instagram_people
            return self._error(
                ERRORS["outside_window_instagram" if instagram else "outside_window"]
            )
        sent = Sent(account, person, body, f"m_{secrets.token_urlsafe(24)}", self.clock())
        self.sent.append(sent)
        return web.json_response({"recipient_id": person, "message_id": sent.message_id})
