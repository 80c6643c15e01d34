"""A small Graph API client: the calls leadgate makes, and Meta's errors as data.

Meta answers a failed call with `{"error": {"message", "type", "code", "error_subcode",
"fbtrace_id", ...}}`. What leadgate does about one depends on its (code, subcode) pair,
looked up in ERROR_KINDS below — a table, not branches, because Meta's published tables
are partly unreachable and partly change (see docs/channels/meta.md): a pair learnt later
is one line here.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import aiohttp
import orjson

from gateway.delivery.http_session import LazySession, request_may_have_arrived
from gateway.textsafe import ascii_digits

log = logging.getLogger(__name__)


class ErrorKind(StrEnum):
    """What a Graph error means for the caller."""

    AUTH = "auth"  # the token is refused (expired, revoked, password changed): stop, alert
    PERMISSION = "permission"  # the app or token lacks a permission for this call
    RATE_LIMIT = "rate_limit"  # too many calls: wait and retry
    INVALID = "invalid"  # a parameter Meta does not accept (or an object it cannot see)
    UNAVAILABLE = "unavailable"  # the person cannot be messaged (blocked us, left, ...)
    WINDOW = "window"  # outside the messaging window (and no tag that allows it)
    TRANSIENT = "transient"  # Meta's own failure or the network: retry


# (code, subcode) -> kind. A None subcode matches every subcode of that code not listed;
# a None code matches that subcode under any code.
# Sources: Graph API error handling guide (190, 102, 4, 17, 32, 613, 1, 2, 10, 100, 200-299);
# the Messenger error-code page (190, 2, 613); codes 551, 10/2018278 and 2534022 as several
# independent Messenger integrations map them (Meta's own table rows were not retrievable).
ERROR_KINDS: Mapping[tuple[int | None, int | None], ErrorKind] = {
    (190, None): ErrorKind.AUTH,
    (102, None): ErrorKind.AUTH,
    (10, 2018278): ErrorKind.WINDOW,
    (None, 2534022): ErrorKind.WINDOW,  # Instagram: "outside of allowed window"
    (10, None): ErrorKind.PERMISSION,
    (3, None): ErrorKind.PERMISSION,  # the app lacks the capability
    (4, None): ErrorKind.RATE_LIMIT,  # application request limit
    (17, None): ErrorKind.RATE_LIMIT,  # user request limit
    (32, None): ErrorKind.RATE_LIMIT,  # page request limit
    (613, None): ErrorKind.RATE_LIMIT,  # calls within one hour exceeded
    (100, None): ErrorKind.INVALID,
    (551, None): ErrorKind.UNAVAILABLE,  # "This person isn't available right now"
    (1, None): ErrorKind.TRANSIENT,
    (2, None): ErrorKind.TRANSIENT,
}


def classify(code: int | None, subcode: int | None, status: int) -> ErrorKind:
    for key in ((code, subcode), (None, subcode), (code, None)):
        if key in ERROR_KINDS:
            return ERROR_KINDS[key]
    if code is not None and 200 <= code <= 299:  # the permission range (200, 230, ...)
        return ErrorKind.PERMISSION
    if status == 429:
        return ErrorKind.RATE_LIMIT
    if status >= 500 or code is None:
        return ErrorKind.TRANSIENT
    # An error Meta names that nothing here knows: a request problem, not worth retrying
    # blindly; callers that cannot give up (a lead's answers) retry it within their budget.
    return ErrorKind.INVALID


class GraphError(Exception):
    """A failed Graph call: Meta's error object, or the network's failure (code None)."""

    def __init__(
        self,
        status: int,  # HTTP status; 0 when no answer came
        message: str,
        *,
        code: int | None = None,
        subcode: int | None = None,
        type: str | None = None,
        fbtrace_id: str | None = None,
        unanswered: bool = False,
    ) -> None:
        super().__init__(message)
        # The request went out and no answer came: Meta may have acted on it.
        self.unanswered = unanswered
        self.status = status
        self.message = message
        self.code = code
        self.subcode = subcode
        self.type = type
        self.fbtrace_id = fbtrace_id

    @property
    def kind(self) -> ErrorKind:
        return classify(self.code, self.subcode, self.status)

    @property
    def label(self) -> str:
        """For metrics: the code (and subcode), or the HTTP status without one."""
        if self.code is None:
            return f"http_{self.status}" if self.status else "network"
        return f"{self.code}/{self.subcode}" if self.subcode else str(self.code)

    def __str__(self) -> str:
        where = f" (fbtrace_id {self.fbtrace_id})" if self.fbtrace_id else ""
        return f"Graph API {self.label}: {self.message}{where}"


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and ascii_digits(value):
        return int(value)
    return None


def error_from(status: int, body: bytes) -> GraphError:
    """A GraphError from a failed answer, whatever shape its body has."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        text = body[:200].decode("utf-8", "replace").strip() or "no body"
        return GraphError(status, f"HTTP {status}: {text}")
    message = err.get("message")
    trace = err.get("fbtrace_id")
    kind = err.get("type")
    return GraphError(
        status,
        message if isinstance(message, str) else "no message",
        code=_int(err.get("code")),
        subcode=_int(err.get("error_subcode")),
        type=kind if isinstance(kind, str) else None,
        fbtrace_id=trace if isinstance(trace, str) else None,
    )


# Answers larger than this are not Graph answers to our calls (a lead is a few KB).
MAX_ANSWER = 1 << 20


def appsecret_proof(app_secret: str, token: str) -> str:
    """Meta's proof that a call comes from the app's server: HMAC-SHA256 of the token under
    the app secret, hex. Required when the app has "Require App Secret" on; harmless else."""
    return hmac.new(app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()


class GraphClient:
    """Calls to one Graph API host. The token goes as `access_token`, as Meta documents;
    every token is registered with gateway.redact, so no log shows one. With `app_secret`
    every call carries its `appsecret_proof`."""

    def __init__(
        self, base: str, version: str, timeout_seconds: float, app_secret: str | None = None
    ) -> None:
        self.base = base.rstrip("/")
        self.version = version
        self.app_secret = app_secret
        self._session = LazySession(timeout_seconds)

    def url(self, path: str) -> str:
        return f"{self.base}/{self.version}/{path.lstrip('/')}"

    async def get(
        self, path: str, token: str, params: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        return await self._call("GET", path, {**(params or {}), **self._auth(token)}, None)

    async def post(self, path: str, token: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("POST", path, self._auth(token), orjson.dumps(body))

    def _auth(self, token: str) -> dict[str, str]:
        if self.app_secret is None:
            return {"access_token": token}
        return {"access_token": token, "appsecret_proof": appsecret_proof(self.app_secret, token)}

    async def _call(
        self, method: str, path: str, query: Mapping[str, str], body: bytes | None
    ) -> dict[str, Any]:
        session = await self._session.get()
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            async with session.request(
                method, self.url(path), params=query, data=body, headers=headers
            ) as resp:
                raw = await resp.content.read(MAX_ANSWER + 1)
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # The exception text may quote the URL, and so the token: only its type is kept.
            raise GraphError(
                0,
                f"no answer: {type(exc).__name__}",
                unanswered=request_may_have_arrived(exc),
            ) from None
        if len(raw) > MAX_ANSWER:
            raise GraphError(status, f"answer larger than {MAX_ANSWER} bytes")
        if status >= 400:
            raise error_from(status, raw)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise GraphError(status, "answer is not JSON") from None
        if not isinstance(data, dict):
            raise GraphError(status, "answer is not a JSON object")
        if "error" in data:  # some proxies and old endpoints answer 200 with an error
            raise error_from(status, raw)
        return data

    async def close(self) -> None:
        await self._session.close()
