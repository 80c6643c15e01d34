"""Long polling for a bot without a public URL: a singleton task per bot (one replica
polls; Telegram answers a second poller with 409 anyway).

Exactly once: the updates of one getUpdates answer go into the inbox together with the
next offset as a checkpoint, in one transaction, and only the next getUpdates (with that
offset) confirms them to Telegram. A crash before the put: Telegram sends them again. A
crash after: the offset is already stored, the updates are in the inbox, and their keys
(update_id) make any repeat a duplicate. (aiogram's own polling moves the offset before
its handlers finish, so it is not used.)

A poison update: aiogram validates a getUpdates answer as a whole, so one update its model
refuses would fail every call at the same offset and stop the bot for good. Such an answer
is read update by update instead: the readable ones go to the inbox as usual, each poison
one is kept in the quarantine with its raw JSON (the last one together with the next
offset, in one write), counted and logged, and polling goes on past it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiogram import Bot
from aiogram.exceptions import (
    AiogramError,
    ClientDecodeError,
    TelegramConflictError,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.types import Update
from pydantic import ValidationError

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


@dataclass(frozen=True, slots=True)
class Poison:
    """An update of a getUpdates answer that aiogram's model refuses."""

    update_id: int | None
    raw: Any
    reason: str


def _update_id(raw: Any) -> int | None:
    value = raw.get("update_id") if isinstance(raw, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def split_answer(data: Any, bot: Bot) -> tuple[list[Update], list[Poison]] | None:
    """A successful getUpdates answer aiogram could not read as a whole, read update by
    update; None when it is not such an answer (then it is a failure like any other)."""
    if not isinstance(data, dict) or data.get("ok") is not True:
        return None
    result = data.get("result")
    if not isinstance(result, list):
        return None
    good: list[Update] = []
    bad: list[Poison] = []
    for raw in result:
        try:
            good.append(Update.model_validate(raw, context={"bot": bot}))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            bad.append(Poison(_update_id(raw), raw, f"{where}: {first['msg']}"))
    return good, bad


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
                poison: list[Poison] = []
            except asyncio.CancelledError:
                raise
            except ClientDecodeError as exc:
                split = split_answer(exc.data, self.bot)
                if split is None:
                    await self._fail("network", describe(exc))
                    continue
                updates, poison = split
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
            if poison:
                if not await self._keep_poison(updates, poison):
                    continue
                offset = self._following(updates, poison)
                continue
            self._failures = 0
            self.problem = None
            if not updates:
                continue
            entries = [self._entry(self.name, u) for u in updates]
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

    @staticmethod
    def _following(updates: list[Update], poison: list[Poison]) -> int | None:
        ids = [u.update_id for u in updates] + [p.update_id for p in poison if p.update_id]
        return max(ids) + 1 if ids else None

    @staticmethod
    def _entry(bot: str, u: Update) -> InboxEntry:
        data = u.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return InboxEntry(CHANNEL, bot, str(u.update_id), orjson.dumps(data), thread=chat_of(data))

    async def _keep_poison(self, updates: list[Update], poison: list[Poison]) -> bool:
        """The readable updates into the inbox, then each poison one into the quarantine,
        the last with the next offset. False (and a named problem) when nothing can move
        the offset: no update of the answer has a readable update_id."""
        following = self._following(updates, poison)
        if following is None:
            await self._fail("poison", "getUpdates answered updates without any update_id")
            return False
        try:
            if updates:
                kept = await self.inbox.put([self._entry(self.name, u) for u in updates])
                for new in kept:
                    self.metrics.received.labels(
                        self.name, "polling", "new" if new else "duplicate"
                    ).inc()
            for n, bad in enumerate(poison, start=1):
                # A crash between these writes gets the same answer again: the readable
                # updates are duplicates then, an earlier poison one is kept twice.
                last = n == len(poison)
                await self.pipeline.quarantine(
                    CHANNEL,
                    f"{self.name}: not a Telegram update: {bad.reason}"[:500],
                    orjson.dumps(bad.raw),
                    {"bot": self.name, "update_id": str(bad.update_id)},
                    checkpoint=(offset_checkpoint(self.name), str(following)) if last else None,
                )
                self.metrics.poison.labels(self.name, "getupdates").inc()
                log.warning(
                    "telegram bot %s: update %s is not a Telegram update (%s): kept in the"
                    " quarantine, polling goes on",
                    self.name,
                    bad.update_id,
                    bad.reason,
                )
        except StoreUnavailable as exc:
            await self._fail("store", f"store unavailable: {exc}")
            return False
        self._failures = 0
        self.problem = None
        self.metrics.last_update.labels(self.name).set(time.time())
        return True

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
