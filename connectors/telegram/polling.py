"""Long polling for a bot without a public URL: a singleton task per bot (one replica
polls; Telegram answers a second poller with 409 anyway).

Exactly once: the updates of one getUpdates answer go into the inbox together with the
next offset as a checkpoint, in one transaction, and only the next getUpdates (with that
offset) confirms them to Telegram. A crash before the put: Telegram sends them again. A
crash after: the offset is already stored, the updates are in the inbox, and their keys
(update_id) make any repeat a duplicate. (aiogram's own polling moves the offset before
its handlers finish, so it is not used.)
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import orjson
from aiogram import Bot
from aiogram.exceptions import (
    AiogramError,
    TelegramConflictError,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)

from connectors.telegram.metrics import TelegramMetrics
from connectors.telegram.settings import BotSettings
from connectors.telegram.updates import chat_of
from gateway.inbox import Inbox, InboxEntry
from gateway.pipeline import Pipeline
from gateway.store.base import StoreUnavailable
from gateway.supervisor import describe

log = logging.getLogger(__name__)

CHANNEL = "telegram"
BACKOFF_MAX = 60.0


def offset_checkpoint(bot: str) -> str:
    return f"telegram:{bot}:offset"


class Poller:
    def __init__(
        self,
        name: str,
        settings: BotSettings,
        bot: Bot,
        inbox: Inbox,
        pipeline: Pipeline,
        metrics: TelegramMetrics,
    ) -> None:
        self.name = name
        self.settings = settings
        self.bot = bot
        self.inbox = inbox
        self.pipeline = pipeline
        self.metrics = metrics
        self.problem: str | None = None
        self._failures = 0

    async def run(self) -> None:
        stored = await self.pipeline.get_checkpoint(offset_checkpoint(self.name))
        offset = int(stored) if stored else None
        s = self.settings
        while True:
            try:
                updates = await self.bot.get_updates(
                    offset=offset,
                    timeout=s.poll_timeout_seconds,
                    allowed_updates=s.allowed_updates,
                    request_timeout=int(s.poll_timeout_seconds + s.request_timeout_seconds),
                )
            except asyncio.CancelledError:
                raise
            except TelegramConflictError as exc:
                await self._fail(
                    "conflict",
                    f"{exc.message} (another poller of this token, or a webhook is set: "
                    f"`leadgate telegram delete-webhook {self.name}`)",
                )
                continue
            except TelegramUnauthorizedError as exc:
                await self._fail("unauthorized", f"the token was refused: {exc.message}")
                continue
            except TelegramRetryAfter as exc:
                await self._fail("retry_after", exc.message, exc.retry_after)
                continue
            except (AiogramError, OSError, TimeoutError) as exc:
                await self._fail("network", describe(exc))
                continue
            self._failures = 0
            self.problem = None
            if not updates:
                continue
            dumped = [
                (u.update_id, u.model_dump(mode="json", by_alias=True, exclude_unset=True))
                for u in updates
            ]
            entries = [
                InboxEntry(CHANNEL, self.name, str(key), orjson.dumps(data), thread=chat_of(data))
                for key, data in dumped
            ]
            following = max(u.update_id for u in updates) + 1
            try:
                kept = await self.inbox.put(
                    entries, checkpoint=(offset_checkpoint(self.name), str(following))
                )
            except StoreUnavailable as exc:
                # Not confirmed to Telegram (same offset next time): nothing is lost.
                await self._fail("store", f"store unavailable: {exc}")
                continue
            offset = following
            for new in kept:
                self.metrics.received.labels(
                    self.name, "polling", "new" if new else "duplicate"
                ).inc()
            self.metrics.last_update.labels(self.name).set(time.time())

    async def _fail(self, reason: str, problem: str, wait: float | None = None) -> None:
        self.metrics.polling_errors.labels(self.name, reason).inc()
        self._failures += 1
        if self.problem != problem:
            log.warning("telegram bot %s: getUpdates failed: %s", self.name, problem)
        self.problem = problem
        if wait is None:
            delay = min(BACKOFF_MAX, 2.0 ** min(self._failures, 6))
            wait = delay / 2 + random.random() * delay / 2
        await asyncio.sleep(wait)
