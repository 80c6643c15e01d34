"""A small Bitrix24 REST client for an inbound webhook: `batch`, a leaky bucket, error kinds.

Facts it is built on (Bitrix24 REST docs): the webhook URL is
https://PORTAL/rest/USER_ID/SECRET/METHOD.json; `batch` takes up to 50 commands, each a
"method?query" string whose parameters are URL-encoded PHP-style (fields[PHONE][0][VALUE]=..),
and answers 200 with per-command `result` / `result_error` (empty ones come as [] from PHP).
The portal meters requests with a leaky bucket (burst 50, drains 2/s; a batch is one
request): over it, 503 QUERY_LIMIT_EXCEEDED. Too much method run time: 429
OPERATION_TIME_LIMIT. Credentials: 401 NO_AUTH_FOUND / expired_token, 403
INVALID_CREDENTIALS / insufficient_scope; those are not retried blindly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import orjson

from gateway.coordination import Coordination
from gateway.delivery.http_session import LazySession, retry_after_seconds
from gateway.delivery.sink import masked
from gateway.redact import register, register_url

MAX_BATCH = 50

# Codes that mean "these credentials will not work until a person acts".
HALT_CODES = frozenset(
    {
        "NO_AUTH_FOUND",
        "INVALID_CREDENTIALS",
        "expired_token",
        "invalid_token",
        "insufficient_scope",
        "ACCESS_DENIED",
        "user_access_error",
        "OVERLOAD_LIMIT",  # a manual block by Bitrix24 support: only a person can lift it
        "PORTAL_DELETED",
        # The portal's subscription ended (bitrix24/b24phpsdk's ApiLevelErrorHandler test
        # records it): nothing will be accepted until someone pays.
        "PAYMENT_REQUIRED",
    }
)
# Longest wait taken from a portal's own operating_reset_at (its limit window is 10 min).
MAX_RESET_WAIT = 900.0
RETRY_CODES = frozenset({"INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER"})


class B24Error(Exception):
    """kind: "halt" (stop and alert), "throttle" (wait, nothing was done), "retry"
    (transient, the work may or may not have happened), "permanent" (this request is wrong)."""

    def __init__(
        self,
        kind: str,
        code: str,
        description: str = "",
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        where = f"HTTP {status} " if status is not None else ""
        super().__init__(f"bitrix24: {where}{code}: {description}".rstrip(": "))
        self.kind = kind
        self.code = code
        self.status = status
        self.retry_after = retry_after


def classify(status: int | None, code: str) -> str:
    if code in HALT_CODES or status == 401:
        return "halt"
    if code in ("QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT") or status in (429, 503):
        return "throttle"
    if code in RETRY_CODES or (status is not None and status >= 500):
        return "retry"
    return "permanent"


class LeakyBucket:
    """Our side of the portal's bucket, so normal operation never meets a 503.

    The budget lives in Coordination under the portal's host: every replica (and every
    sink in a process) delivering to one portal takes from the same bucket, so together
    they never exceed it. As a token bucket: `burst - 1` tokens (one request of headroom
    absorbs the clock skew between the portal's count and ours), refilled at `rate`.
    `full=True` starts as if the burst was just spent: after a restart we cannot know,
    and the portal's bucket is shared with every other integration.
    """

    def __init__(
        self,
        coordination: Coordination,
        portal: str,
        burst: int,
        rate: float,
        *,
        full: bool = False,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.coordination = coordination
        self.key = f"b24:{portal}"
        self.capacity = float(max(1, burst - 1))
        self.rate = rate
        self.full = full
        self._sleep = sleep
        # A token taken by wait_ready() and not yet spent: the next request uses it.
        self._held = False

    async def _take(self) -> float:
        return await self.coordination.take(
            self.key, capacity=self.capacity, rate=self.rate, start_empty=self.full
        )

    async def wait_ready(self) -> None:
        """Return when one more request fits, and keep its token for that request: a
        peek would let another replica spend the token between our look and our send."""
        while not self._held:
            wait = await self._take()
            if wait <= 0:
                self._held = True
            else:
                await self._sleep(wait)

    async def acquire(self) -> None:
        await self.wait_ready()
        self._held = False

    async def fill(self) -> None:
        """The portal said the bucket is full (503): believe it, for every replica."""
        self._held = False
        await self.coordination.drain(self.key, capacity=self.capacity, rate=self.rate)


def portal_of(webhook_url: str) -> str:
    """The portal's host name: the bucket's key (never the URL: it holds the secret)."""
    return (urlsplit(webhook_url).hostname or "portal").lower()


def encode_params(params: Mapping[str, Any]) -> str:
    """PHP-style query string: {"fields": {"PHONE": [{"VALUE": "+7"}]}} ->
    fields[PHONE][0][VALUE]=%2B7. Values fully percent-encoded; None is left out."""
    pairs: list[str] = []

    def walk(key: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, Mapping):
            for sub, item in value.items():
                walk(f"{key}[{sub}]", item)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(f"{key}[{i}]", item)
        else:
            text = ("Y" if value else "N") if isinstance(value, bool) else str(value)
            pairs.append(f"{quote(key, safe='[]')}={quote(neutralize(text), safe='')}")

    for key, value in params.items():
        walk(key, value)
    return "&".join(pairs)


def neutralize(text: str) -> str:
    """`batch` substitutes $result[cmd][field] in command parameters; customer text must not
    be able to pull another command's result into a lead."""
    return text.replace("$result[", "$ result[")


def command(method: str, params: Mapping[str, Any]) -> str:
    query = encode_params(params)
    return f"{method}?{query}" if query else method


class B24Client:
    def __init__(
        self,
        webhook_url: str,
        *,
        bucket: LeakyBucket,
        timeout: float = 30.0,
        operation_wait: float = 60.0,
        record: Callable[[str], None] | None = None,
    ) -> None:
        self._base = webhook_url if webhook_url.endswith("/") else webhook_url + "/"
        self._secret = self._base.rstrip("/").rsplit("/", 1)[-1]
        # "rest/<user>/<secret>" in any error, log line or page, however it is echoed.
        register_url(self._base)
        register(self._secret)
        self.bucket = bucket
        self._http = LazySession(timeout)
        self._operation_wait = operation_wait
        self._record = record or (lambda outcome: None)

    async def start(self) -> None:
        await self._http.get()

    async def close(self) -> None:
        await self._http.close()

    def mask(self, text: str) -> str:
        return masked(text, self._base, self._secret)

    async def call(self, method: str, params: Mapping[str, Any]) -> Any:
        """One method with a JSON body; answers `result` or raises B24Error."""
        body = await self._post(method, dict(params))
        return body.get("result")

    async def batch(
        self, commands: Mapping[str, str]
    ) -> tuple[dict[str, Any], dict[str, B24Error]]:
        """Up to 50 commands in one request: (results by key, errors by key). A key in
        neither was not run (only with halt=1, which we never send)."""
        if len(commands) > MAX_BATCH:
            raise ValueError(f"a batch holds at most {MAX_BATCH} commands")
        body = await self._post("batch", {"halt": 0, "cmd": dict(commands)})
        outer = body.get("result")
        if not isinstance(outer, dict):
            raise B24Error("retry", "BAD_ANSWER", "batch answer without a result object")
        results = outer.get("result") or {}
        errors_raw = outer.get("result_error") or {}
        if not isinstance(results, dict) or not isinstance(errors_raw, dict):
            raise B24Error("retry", "BAD_ANSWER", "batch result is not keyed by command")
        errors: dict[str, B24Error] = {}
        reset = reset_wait(body.get("time"))
        for key, err in errors_raw.items():
            # A method's own error may come with an empty code and only a description.
            code = str((err.get("error") if isinstance(err, dict) else err) or "ERROR")
            code = self.mask(code)[:100]
            text = str(err.get("error_description", "")) if isinstance(err, dict) else ""
            kind = classify(None, code)
            # A blocked method answers 200 with the block inside the batch; the portal says
            # when the block lifts (time.operating_reset_at): wait for that, not a second.
            wait = reset if code == "OPERATION_TIME_LIMIT" else None
            errors[key] = B24Error(kind, code, self.mask(text), retry_after=wait)
        return dict(results), errors

    async def _post(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        return await post_method(
            await self._http.get(),
            f"{self._base}{method}.json",
            payload,
            bucket=self.bucket,
            mask=self.mask,
            record=self._record,
            operation_wait=self._operation_wait,
        )


async def post_method(
    session: aiohttp.ClientSession,
    url: str,
    payload: dict[str, Any],
    *,
    bucket: LeakyBucket,
    mask: Callable[[str], str],
    record: Callable[[str], None],
    operation_wait: float,
    kind_of: Callable[[int | None, str], str] = classify,
) -> dict[str, Any]:
    """One REST request with a JSON body, within the portal's bucket: the answer's body, or
    B24Error. Shared by the webhook client and the application's (OAuth) client, whose
    `kind_of` may read some codes differently (an expired token is renewed, not a halt)."""
    await bucket.acquire()
    try:
        async with session.post(
            url,
            data=orjson.dumps(payload),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            # A portal that moved answers 302: following it would replay the request
            # (and its credentials) to wherever it points.
            allow_redirects=False,
        ) as resp:
            raw = await resp.read()
            status = resp.status
            retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
            moved_to = resp.headers.get("Location", "") if 300 <= status < 400 else None
    except (aiohttp.ClientError, TimeoutError) as exc:
        record("network")
        detail = mask(f"{type(exc).__name__}: {exc}")
        raise B24Error("retry", "NETWORK", detail) from None
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if status == 200 and "error" not in body:
        record("ok")
        return body
    if moved_to is not None:
        # Bitrix24 answers 302 when the portal's address changed: only a person can say
        # whether the new one is ours.
        record("auth")
        host = urlsplit(moved_to).hostname or "elsewhere"
        raise B24Error(
            "halt",
            "PORTAL_MOVED",
            mask(f"the portal now answers at {host}: update its address in the config"),
            status=status,
        )
    code = mask(str(body.get("error") or f"HTTP_{status}"))[:100]
    description = mask(str(body.get("error_description") or ""))
    kind = kind_of(status, code)
    if code == "QUERY_LIMIT_EXCEEDED" or (kind == "throttle" and status == 503):
        await bucket.fill()
        record("query_limit")
        retry_after = retry_after or 1.0 / bucket.rate
    elif kind == "throttle":
        record("operation_limit")
        retry_after = retry_after or reset_wait(body.get("time")) or operation_wait
    else:
        outcomes = {"halt": "auth", "renew": "expired_token", "retry": "server_error"}
        record(outcomes.get(kind, "error"))
    raise B24Error(kind, code, description, status=status, retry_after=retry_after)


def reset_wait(time_block: Any) -> float | None:
    """Seconds until the portal lifts an operating-time block, by the portal's own clock:
    time.operating_reset_at (unix time) minus time.finish of the same answer."""
    if not isinstance(time_block, dict):
        return None
    reset, finish = time_block.get("operating_reset_at"), time_block.get("finish")
    if not isinstance(reset, int | float) or not isinstance(finish, int | float):
        return None
    if isinstance(reset, bool) or isinstance(finish, bool):
        return None
    return min(MAX_RESET_WAIT, max(1.0, float(reset) - float(finish)))
