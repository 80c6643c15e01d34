"""The Telegram connector: any number of bots, each by webhook or by long polling.

Webhook `POST /v1/telegram/{name}`: the secret header is compared in constant time before
anything else; the update is stored in the inbox (key: its update_id, per bot) and only
then answered 200, so Telegram's retries of an update we did not acknowledge are its
only repeats, and those are duplicates. Polling: a singleton task per bot
(connectors.telegram.polling). Either way the inbox worker hands each stored update to
`handle`, which makes it an event (connectors.telegram.updates) for the pipeline.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
from aiogram import Bot
from aiohttp import web
from pydantic import ValidationError

from connectors.telegram.bots import make_bot
from connectors.telegram.metrics import TelegramMetrics
from connectors.telegram.polling import Poller
from connectors.telegram.sender import TelegramSender
from connectors.telegram.settings import BotSettings, TelegramSettings
from connectors.telegram.updates import chat_of, parse_update
from gateway.channels import ConnectorContext, TaskSpec
from gateway.chats import ChatAccount, pick_locale
from gateway.errors import ApiError
from gateway.http import too_deep
from gateway.i18n import N_, chat_locale, gettext_for
from gateway.inbox import InboxEntry, InboxItem, Unprocessable
from gateway.models import AutoAnswer, Channel
from gateway.redact import register as register_secret
from gateway.textsafe import header_bytes

log = logging.getLogger(__name__)

CHANNEL = "telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
DEFAULT_START = N_(
    "Здравствуйте! Напишите, что вас интересует, — менеджер ответит здесь же. "
    "Если удобнее по телефону, нажмите «Отправить номер», и мы перезвоним."
)


class TelegramConnector:
    name = "telegram"

    def __init__(self, ctx: ConnectorContext, settings: TelegramSettings) -> None:
        self.ctx = ctx
        self.settings = settings
        self.region = ctx.settings.phone_region
        self.metrics = TelegramMetrics(ctx.metrics.registry)
        for bot in settings.bots.values():
            register_secret(bot.token.get_secret_value())
            if bot.secret_token is not None:
                register_secret(bot.secret_token.get_secret_value())
        self.bots: dict[str, Bot] = {name: make_bot(b) for name, b in settings.bots.items()}
        ctx.inbox.register(CHANNEL, self.handle)
        ctx.chats.register_sender(
            Channel.TELEGRAM,
            TelegramSender(
                self.bots,
                {name: b.send_rate for name, b in settings.bots.items()},
                ctx.coordination,
                self.metrics,
            ),
        )
        for name, bot in settings.bots.items():
            ctx.chats.register_account(
                Channel.TELEGRAM,
                name,
                ChatAccount(bot.after_hours_answer, bot.after_hours_text or None),
            )
        self.pollers = [
            Poller(name, b, self.bots[name], ctx.inbox, ctx.pipeline, self.metrics)
            for name, b in settings.bots.items()
            if b.mode == "polling"
        ]

    # --- the connector contract -------------------------------------------------------------

    def routes(self) -> Sequence[web.AbstractRouteDef]:
        if not any(b.mode == "webhook" for b in self.settings.bots.values()):
            return []
        return [web.post("/v1/telegram/{name}", self.webhook)]

    def tasks(self) -> Sequence[TaskSpec]:
        return [
            TaskSpec(f"telegram:{p.name}", p.run, singleton=True, lease_seconds=60.0)
            for p in self.pollers
        ]

    def readiness(self) -> str | None:
        problems = [f"{p.name}: {p.problem}" for p in self.pollers if p.problem is not None]
        return "; ".join(problems) or None

    async def shutdown(self) -> None:
        for bot in self.bots.values():
            await bot.session.close()

    # --- receiving ----------------------------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        bot = self.settings.bots.get(name)
        if bot is None or bot.mode != "webhook" or bot.secret_token is None:
            raise ApiError(404, "not_found", "no bot of that name takes webhooks here")
        # First, before reading a byte of the body: is this Telegram?
        given = header_bytes(request.headers.get(SECRET_HEADER, ""))
        if not hmac.compare_digest(given, bot.secret_token.get_secret_value().encode()):
            self.metrics.webhook_errors.labels(name, "secret").inc()
            raise ApiError(401, "unauthorized", f"missing or wrong {SECRET_HEADER}")
        body = await request.read()
        update_id = self._update_id(body)
        if update_id is None:
            # Telegram's, yet not an update: kept for a person, and acknowledged (a retry
            # of the same bytes could never do better).
            self.metrics.webhook_errors.labels(name, "not_an_update").inc()
            await self.ctx.pipeline.quarantine(
                CHANNEL, f"{name}: not a Telegram update", body, {"bot": name}
            )
            return web.json_response({})
        entry = InboxEntry(CHANNEL, name, str(update_id), body, thread=chat_of(orjson.loads(body)))
        kept = await self.ctx.inbox.put([entry])
        self.metrics.received.labels(name, "webhook", "new" if kept[0] else "duplicate").inc()
        self.metrics.last_update.labels(name).set(datetime.now(UTC).timestamp())
        # An empty JSON object: Telegram runs a method given in a webhook answer's body.
        return web.json_response({})

    @staticmethod
    def _update_id(body: bytes) -> int | None:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict) or too_deep(data):
            return None  # nested past anything Telegram sends: kept, never parsed further
        value = data.get("update_id")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return None
        return value

    # --- handling (the inbox worker calls it) ------------------------------------------------

    async def handle(self, item: InboxItem) -> None:
        try:
            data = orjson.loads(item.body)
        except orjson.JSONDecodeError as exc:
            raise Unprocessable(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise Unprocessable("not a JSON object")
        bot = self.settings.bots.get(item.account)
        try:
            parsed = parse_update(
                item.account,
                data,
                received_at=datetime.now(UTC),
                region=self.region,
                greeting=lambda locale: self._greeting(bot, locale),
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            self.metrics.poison.labels(item.account, "handling").inc()
            raise Unprocessable(f"not a Telegram update: {where}: {first['msg']}") from None
        self.metrics.updates.labels(item.account, parsed.kind).inc()
        if parsed.event is not None:
            await self.ctx.pipeline.accept(parsed.event)

    @staticmethod
    def _greeting(bot: BotSettings | None, locale: str | None) -> AutoAnswer:
        texts = bot.start_text if bot is not None else {}
        if texts:
            text = texts[pick_locale(texts, locale)]
        else:
            text = gettext_for(chat_locale(locale))(DEFAULT_START)
        return AutoAnswer(text=text, ask_phone=True)
