"""aiogram Bot clients for the configured bots: one HTTP session each, pointed at
api.telegram.org or the bot's own Bot API server (`api_base`).

aiogram is used as the Bot API client and for its types; never its dispatcher's polling
or its webhook handler (both confirm an update to Telegram before it is handled, so a
crash loses it): updates go through leadgate's inbox instead.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import PRODUCTION, TelegramAPIServer

from connectors.telegram.settings import BotSettings
from connectors.telegram.updates import lenient


def _loads(text: str | bytes) -> Any:
    """Telegram's answers, mended where real servers break their own docs (a null
    first_name) so aiogram's typed parse does not refuse a whole getUpdates batch."""
    data = orjson.loads(text)
    return lenient(data) if isinstance(data, dict) else data


def make_bot(settings: BotSettings) -> Bot:
    api = TelegramAPIServer.from_base(settings.api_base) if settings.api_base else PRODUCTION
    session = AiohttpSession(api=api, json_loads=_loads, timeout=settings.request_timeout_seconds)
    return Bot(settings.token.get_secret_value(), session=session)
