"""Sending messages to Telegram customers: the channel's MessageSender.

sendMessage's answers, as the Bot API gives them (FACTS: match on the HTTP status and the
description, keep the raw text), become SendResults:
- 429 with parameters.retry_after: retry, after at least that long;
- 403 (blocked by the user, user deactivated, cannot initiate a conversation): final;
- 400 chat not found, message too long, and other bad requests: final (resending the
  same request cannot succeed);
- 401: the token is refused: halt this bot, probe later;
- 5xx, and network errors before the request left (no connection): retry;
- a timeout or a dropped connection after the request left: unknown — Telegram may have
  delivered it. Telegram offers no idempotency key for sendMessage, so the message worker
  (gateway.delivery.messages), told by `idempotent = False`, does not send it again: the
  line ends `unconfirmed`. So does a send cut off by a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import KeyboardButton, ReplyKeyboardMarkup

from connectors.telegram.metrics import TelegramMetrics
from gateway.conversations import OutboundMessage, SendResult, SendStatus
from gateway.coordination import Coordination
from gateway.delivery.http_session import request_may_have_arrived
from gateway.i18n import N_, chat_locale, gettext_for

log = logging.getLogger(__name__)

MAX_TEXT = 4096  # sendMessage: "1-4096 characters after entities parsing"
CONTACT_BUTTON = N_("Отправить номер")


def contact_keyboard(locale: str | None) -> ReplyKeyboardMarkup:
    """The «Отправить номер» button: Telegram sends the customer's own number as a contact
    when it is pressed (private chats only)."""
    label = gettext_for(chat_locale(locale))(CONTACT_BUTTON)
    return ReplyKeyboardMarkup(
        keyboard=[[KeyboardButton(text=label, request_contact=True)]],
        resize_keyboard=True,
        one_time_keyboard=True,
    )


class TelegramSender:
    max_text = MAX_TEXT
    idempotent = False

    def __init__(
        self,
        bots: Mapping[str, Bot],
        rates: Mapping[str, float],
        coordination: Coordination,
        metrics: TelegramMetrics,
    ) -> None:
        self.bots = bots
        self.rates = rates
        self.coordination = coordination
        self.metrics = metrics

    async def send(self, message: OutboundMessage) -> SendResult:
        bot = self.bots.get(message.account)
        if bot is None:
            return SendResult(
                SendStatus.UNDELIVERABLE, reason=f"no bot named {message.account!r} is configured"
            )
        await self._pace(message.account)
        markup = contact_keyboard(message.locale) if message.ask_phone else None
        try:
            sent = await bot.send_message(
                chat_id=int(message.chat), text=message.text, reply_markup=markup
            )
        except TelegramRetryAfter as exc:
            result = SendResult(SendStatus.RETRY, reason=exc.message, retry_after=exc.retry_after)
        except TelegramUnauthorizedError as exc:
            result = SendResult(SendStatus.HALT, reason=exc.message)
        except (TelegramForbiddenError, TelegramBadRequest, TelegramNotFound) as exc:
            result = SendResult(SendStatus.UNDELIVERABLE, reason=exc.message)
        except TelegramMigrateToChat as exc:  # a group that became a supergroup: not a lead
            result = SendResult(SendStatus.UNDELIVERABLE, reason=exc.message)
        except TelegramNetworkError as exc:
            # aiogram keeps aiohttp's own error as the cause: it tells whether it left.
            arrived = request_may_have_arrived(exc)
            status = SendStatus.UNKNOWN if arrived else SendStatus.RETRY
            result = SendResult(status, reason=exc.message)
        except TelegramServerError as exc:
            result = SendResult(SendStatus.RETRY, reason=exc.message)
        except TelegramAPIError as exc:  # a status aiogram does not classify
            result = SendResult(SendStatus.RETRY, reason=exc.message)
        else:
            result = SendResult(SendStatus.SENT, external_id=str(sent.message_id))
        self.metrics.reply(message.account, result.status.value)
        return result

    async def _pace(self, account: str) -> None:
        """Stay under the bot's sending rate (Telegram: about 30 messages a second), shared
        by the replicas through coordination."""
        rate = self.rates.get(account, 25.0)
        for _ in range(100):  # bounded: a broken coordinator must not hold sending forever
            wait = await self.coordination.take(f"telegram:send:{account}", rate, rate)
            if wait <= 0:
                return
            await asyncio.sleep(wait)
