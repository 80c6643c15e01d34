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
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

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
    }
)
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

    One request of headroom under the portal's burst absorbs the clock skew between its
    count and ours. `full=True` starts as if the burst was just spent: after a restart we
    cannot know, and the portal's bucket is shared with every other integration.
    """

    def __init__(
        self,
        burst: int,
        rate: float,
        *,
        full: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = max(1, burst - 1)
        self.rate = rate
        self._clock = clock
        self._level = float(self.capacity) if full else 0.0
        self._stamp = clock()

    def _drain(self) -> None:
        now = self._clock()
        self._level = max(0.0, self._level - (now - self._stamp) * self.rate)
        self._stamp = now

    def delay(self) -> float:
        """Seconds until one more request fits."""
        self._drain()
        return max(0.0, (self._level + 1 - self.capacity) / self.rate)

    async def wait_ready(self) -> None:
        wait = self.delay()
        while wait > 0:
            await asyncio.sleep(wait)
            wait = self.delay()

    async def acquire(self) -> None:
        await self.wait_ready()
        self._level += 1

    def fill(self) -> None:
        """The portal said the bucket is full (503): believe it."""
        self._drain()
        self._level = float(self.capacity)


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
        for key, err in errors_raw.items():
            code = str(err.get("error", "ERROR")) if isinstance(err, dict) else str(err)
            code = self.mask(code)[:100]
            text = str(err.get("error_description", "")) if isinstance(err, dict) else ""
            errors[key] = B24Error(classify(None, code), code, self.mask(text))
        return dict(results), errors

    async def _post(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        session = await self._http.get()
        await self.bucket.acquire()
        try:
            async with session.post(
                f"{self._base}{method}.json",
                data=orjson.dumps(payload),
                headers={"Content-Type": "application/json", "Accept": "application/json"},
            ) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._record("network")
            detail = self.mask(f"{type(exc).__name__}: {exc}")
            raise B24Error("retry", "NETWORK", detail) from None
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if status == 200 and "error" not in body:
            self._record("ok")
            return body
        code = self.mask(str(body.get("error") or f"HTTP_{status}"))[:100]
        description = self.mask(str(body.get("error_description") or ""))
        kind = classify(status, code)
        if code == "QUERY_LIMIT_EXCEEDED" or (kind == "throttle" and status == 503):
            self.bucket.fill()
            self._record("query_limit")
            retry_after = retry_after or 1.0 / self.bucket.rate
        elif kind == "throttle":
            self._record("operation_limit")
            retry_after = retry_after or self._operation_wait
        else:
            self._record({"halt": "auth", "retry": "server_error"}.get(kind, "error"))
        raise B24Error(kind, code, description, status=status, retry_after=retry_after)

