"""The webhook sink, for any other CRM: POST the lead as JSON, signed, once per outbox item.

Every request carries
  X-Leadgate-Delivery: the outbox item's event id — the same on every retry: deduplicate on it;
  X-Leadgate-Event: lead.created | lead.merged;
  X-Leadgate-Timestamp: unix seconds when this attempt was signed;
  X-Leadgate-Signature: sha256=HEX(HMAC-SHA256(secret, f"{timestamp}.{body}")).
A receiver recomputes the signature over the raw body, compares in constant time and
refuses timestamps older than a few minutes. 2xx = delivered; 401/403 stop delivery (the
secret is wrong: retrying will not fix it); 408/5xx retry with backoff; 429/503 with
Retry-After slow down; any other 4xx is permanent (dead-letter queue).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import orjson

from gateway.delivery.http_session import LazySession, retry_after_seconds
from gateway.delivery.settings import WebhookSinkSettings
from gateway.delivery.sink import Delivery, Result, Status, masked
from gateway.redact import register, register_url


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return (
        "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )


def payload(d: Delivery) -> bytes:
    """The new event and a summary of its lead, never the lead's history: every merge of a
    person who posts again and again would otherwise send all their events once more."""
    lead = d.lead.model_dump(mode="json", exclude={"events"})
    lead["event_count"] = d.event_count
    return orjson.dumps(
        {
            "delivery_id": d.item.event_id,
            "kind": d.item.kind,
            "lead": lead,
            "event": d.event.model_dump(mode="json") if d.event is not None else None,
        }
    )


class WebhookSink:
    name = "webhook"
    marks_attempts = True

    def __init__(
        self,
        settings: WebhookSinkSettings,
        *,
        record: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.url is None or settings.secret is None:
            raise ValueError("delivery.webhook.url and delivery.webhook.secret must be set")
        self.url = settings.url
        self._secret = settings.secret.get_secret_value().encode()
        # The URL may hold a key in its path or query; the HMAC secret never leaves us,
        # but it must not show anywhere should a receiver echo it.
        register_url(self.url)
        register(settings.secret.get_secret_value())
        self._http = LazySession(settings.timeout_seconds)
        self._limit = asyncio.Semaphore(settings.concurrency)
        self._record = record or (lambda outcome: None)
        self._clock = clock

    async def start(self) -> None:
        await self._http.get()

    async def close(self) -> None:
        await self._http.close()

    async def ready(self) -> None:
        return None

    async def deliver(self, batch: Sequence[Delivery]) -> list[Result]:
        session = await self._http.get()
        return list(await asyncio.gather(*(self._one(session, d) for d in batch)))

    async def _one(self, session: aiohttp.ClientSession, d: Delivery) -> Result:
        body = payload(d)
        stamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "leadgate",
            "X-Leadgate-Delivery": d.item.event_id,
            "X-Leadgate-Event": d.item.kind,
            "X-Leadgate-Attempt": str(d.item.attempts + 1),
            "X-Leadgate-Timestamp": stamp,
            "X-Leadgate-Signature": sign(self._secret, stamp, body),
        }
        async with self._limit:
            try:
                async with session.post(self.url, data=body, headers=headers) as resp:
                    status = resp.status
                    answer = await resp.read()
                    retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._record("network")
                error = masked(f"webhook: {type(exc).__name__}: {exc}", self.url)
                return Result(d.item.id, Status.RETRY, error=error)
        return self._judge(d, status, answer, retry_after)

    def _judge(self, d: Delivery, status: int, answer: bytes, retry_after: float | None) -> Result:
        snippet = masked(answer[:200].decode("utf-8", "replace"), self.url)
        error = f"webhook: HTTP {status}: {snippet}".rstrip(": ")
        if 200 <= status < 300:
            self._record("ok")
            return Result(d.item.id, Status.DELIVERED, remote_id=_remote_id(answer))
        if status in (401, 403):
            self._record("auth")
            return Result(d.item.id, Status.HALT, error=error)
        if status in (429, 503) and retry_after is not None:
            self._record("throttled")
            return Result(d.item.id, Status.THROTTLE, error=error, retry_after=retry_after)
        if status in (408, 425, 429) or status >= 500:
            self._record("server_error")
            return Result(d.item.id, Status.RETRY, error=error, retry_after=retry_after)
        self._record("error")
        return Result(d.item.id, Status.DEAD, error=error)


def _remote_id(answer: bytes) -> str | None:
    try:
        data: Any = orjson.loads(answer) if answer else None
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, dict) and isinstance(data.get("id"), str | int):
        return str(data["id"])
    return None

