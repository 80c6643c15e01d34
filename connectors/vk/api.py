"""A small asynchronous VK API client: one community token, error kinds, our own rate budget.

Why not the `vk-api` package (python273/vk_api): it is synchronous (requests), so every
call would need a worker thread; it posts to a hard-coded https://api.vk.ru/method/ URL
(a stand-in is reachable only by mounting a rewriting adapter on its session); it sleeps
`RPS_DELAY = 0.34` s inside one lock per instance (every token throttled to the ~3 req/s of
a user token, while a community token may make 20); and its handler for error 6 sleeps
0.5 s and calls the method again with no bound. We need the opposite on each point: the
event loop never blocks, a rate error comes back to the caller as a kind (a send is
retried by the outbox with backoff, a name lookup is skipped), and the budget is shared
by every replica through Coordination. The VK method contract is small: a POST of form
fields to {base}/method/{name} with access_token and v, answered (HTTP 200 either way)
with {"response": ...} or {"error": {"error_code", "error_msg", "request_params"}}.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

import aiohttp
import orjson
from pydantic import SecretStr

from gateway.coordination import Coordination
from gateway.redact import register as register_secret


class ErrorKind(StrEnum):
    THROTTLED = "throttled"  # 6, 9, 29: wait and try again
    AUTH = "auth"  # 5, 27, 28: the token is refused; only a person can fix it
    CANNOT_WRITE = "cannot_write"  # 900, 901, 902: the user does not take our messages
    WINDOW_CLOSED = "window_closed"  # 950: the time to answer this user has passed
    TRANSIENT = "transient"  # 1, 10, HTTP 5xx, network: try again
    PERMANENT = "permanent"  # this request is wrong (100, 914, 15, ...): do not repeat it


# vk-api-schema errors.json (5.199): the codes each kind is made of.
_KINDS: dict[int, ErrorKind] = {
    1: ErrorKind.TRANSIENT,  # Unknown error occurred
    5: ErrorKind.AUTH,  # User authorization failed
    6: ErrorKind.THROTTLED,  # Too many requests per second
    9: ErrorKind.THROTTLED,  # Flood control
    10: ErrorKind.TRANSIENT,  # Internal server error
    14: ErrorKind.THROTTLED,  # Captcha needed: the same as flood for a robot
    27: ErrorKind.AUTH,  # Group authorization failed
    28: ErrorKind.AUTH,  # Application authorization failed
    29: ErrorKind.THROTTLED,  # Rate limit reached
    900: ErrorKind.CANNOT_WRITE,  # Can't send messages for users from blacklist
    901: ErrorKind.CANNOT_WRITE,  # Can't send messages for users without permission
    902: ErrorKind.CANNOT_WRITE,  # ... due to their privacy settings
    950: ErrorKind.WINDOW_CLOSED,  # Can't send message, reply timed out
}
# How long to wait before trying a throttled call again: 6 is per second; 9 (flood
# control: more than 1000 messages an hour to one user, says VK support) and 29 (a
# method's daily quota) do not clear in seconds.
THROTTLE_WAIT = {6: 1.0, 9: 300.0, 14: 60.0, 29: 3600.0}
# A read is tried again in place only after short pauses; a longer one is the caller's.
MAX_INLINE_WAIT = 5.0


class VkError(Exception):
    """A method error (`code` from VK) or a transport failure (`code` None)."""

    def __init__(
        self, kind: ErrorKind, code: int | None, message: str, *, method: str = ""
    ) -> None:
        where = f" {method}" if method else ""
        label = f"VK{where} error {code}" if code is not None else f"VK{where}"
        super().__init__(f"{label}: {message}"[:500])
        self.kind = kind
        self.code = code
        self.message = message[:300]
        self.method = method

    @property
    def retry_after(self) -> float:
        if self.code is not None and self.code in THROTTLE_WAIT:
            return THROTTLE_WAIT[self.code]
        return 2.0


def error_kind(code: int) -> ErrorKind:
    return _KINDS.get(code, ErrorKind.PERMANENT)


def method_error(body: Mapping[str, Any], method: str) -> VkError | None:
    """The error of a method answer, or None when it has a response."""
    error = body.get("error")
    if error is None:
        return None
    if not isinstance(error, Mapping):
        return VkError(ErrorKind.TRANSIENT, None, "unreadable error object", method=method)
    code = error.get("error_code")
    if not isinstance(code, int) or isinstance(code, bool):
        return VkError(ErrorKind.TRANSIENT, None, "error without a code", method=method)
    return VkError(error_kind(code), code, str(error.get("error_msg") or ""), method=method)


class VkApi:
    """Calls methods with one community token. Not thread-bound, never blocks the loop."""

    def __init__(
        self,
        *,
        base: str,
        token: SecretStr,
        version: str,
        timeout_seconds: float,
        coordination: Coordination,
        bucket: str,
        requests_per_second: float,
        sleep: Callable[[float], Any] = asyncio.sleep,
        observe: Callable[[str, VkError | None], None] | None = None,
    ) -> None:
        self.base = base.rstrip("/")
        self._token = token
        register_secret(token.get_secret_value())
        self.version = version
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self.coordination = coordination
        self.bucket = f"vk:{bucket}"
        self.rate = requests_per_second
        self._sleep = sleep
        self._observe = observe

    async def _session_now(self) -> aiohttp.ClientSession:
        # Created in the running loop (aiohttp binds a session to it), not at construction.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _budget(self) -> None:
        """Our share of the token's per-second limit, across replicas (Coordination). A
        bucket of one: calls are spaced evenly, so no window of one second ever holds more
        than the rate (a burst on top of the refill would, and VK counts per second)."""
        while True:
            wait = await self.coordination.take(self.bucket, capacity=1.0, rate=self.rate)
            if wait <= 0:
                return
            await self._sleep(wait)

    async def call(
        self, method: str, params: Mapping[str, Any] | None = None, *, retries: int = 0
    ) -> Any:
        """The method's `response`, or VkError. `retries`: how many more times a throttled
        or transient failure is tried again, after VK's pause for it. Zero for a send: the
        outbox decides when to repeat it (and random_id makes a repeat safe); reads (names,
        lead forms) take a few."""
        for attempt in range(retries + 1):
            try:
                response = await self._call(method, params)
            except VkError as exc:
                if self._observe is not None:
                    self._observe(method, exc)
                again = exc.kind in (ErrorKind.THROTTLED, ErrorKind.TRANSIENT)
                if not again or attempt == retries or exc.retry_after > MAX_INLINE_WAIT:
                    raise
                await self._sleep(exc.retry_after)
                continue
            if self._observe is not None:
                self._observe(method, None)
            return response
        raise AssertionError("unreachable")

    async def _call(self, method: str, params: Mapping[str, Any] | None) -> Any:
        fields = {k: _form_value(v) for k, v in (params or {}).items() if v is not None}
        fields["v"] = self.version
        fields["access_token"] = self._token.get_secret_value()
        await self._budget()
        session = await self._session_now()
        try:
            async with session.post(f"{self.base}/method/{method}", data=fields) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise VkError(
                ErrorKind.TRANSIENT, None, f"{type(exc).__name__}: {exc}", method=method
            ) from None
        if status >= 500 or status == 429:
            raise VkError(ErrorKind.TRANSIENT, None, f"HTTP {status}", method=method)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise VkError(
                ErrorKind.TRANSIENT, None, f"HTTP {status}, not JSON", method=method
            ) from None
        if not isinstance(body, dict):
            raise VkError(ErrorKind.TRANSIENT, None, "answer is not an object", method=method)
        error = method_error(body, method)
        if error is not None:
            if error.code == 6:
                # VK says we went over: believe it for every replica sharing the token.
                await self.coordination.drain(self.bucket, capacity=1.0, rate=self.rate)
            raise error
        if "response" not in body:
            raise VkError(ErrorKind.TRANSIENT, None, "answer without response", method=method)
        return body["response"]


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)
