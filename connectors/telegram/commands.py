"""What `leadgate telegram ...` does: talk to the Bot API for one configured bot (its
token and api_base from the config)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from aiogram import Bot
from aiogram.exceptions import AiogramError, TelegramAPIError

from connectors.telegram.bots import make_bot
from connectors.telegram.settings import BotSettings, TelegramSettings
from gateway.config import Settings
from gateway.textsafe import printable

T = TypeVar("T")


def _bot(settings: Settings, name: str) -> BotSettings:
    bots = settings.section(TelegramSettings).bots
    if name not in bots:
        known = ", ".join(sorted(bots)) or "none configured"
        raise SystemExit(f"leadgate: no bot {name!r} in [telegram.bots] ({known})")
    return bots[name]


def _run(settings: BotSettings, work: Callable[[Bot], Awaitable[T]]) -> T:
    async def main() -> T:
        bot = make_bot(settings)
        try:
            return await work(bot)
        finally:
            await bot.session.close()

    try:
        return asyncio.run(main())
    except TelegramAPIError as exc:
        raise SystemExit(f"leadgate: Telegram refused: {printable(exc.message)}") from None
    except AiogramError as exc:
        raise SystemExit(f"leadgate: could not reach the Bot API: {printable(str(exc))}") from None


def set_webhook(args: argparse.Namespace, settings: Settings) -> int:
    bot = _bot(settings, args.name)
    if bot.mode != "webhook" or bot.secret_token is None:
        print(
            f'leadgate: bot {args.name!r} is in polling mode: set mode = "webhook" and a '
            "secret_token first",
            file=sys.stderr,
        )
        return 1
    url = args.url or bot.webhook_url
    if not url:
        print("leadgate: give --url (or webhook_url in the bot's config)", file=sys.stderr)
        return 1
    secret = bot.secret_token.get_secret_value()

    async def work(client: Bot) -> None:
        await client.set_webhook(
            url=url,
            secret_token=secret,
            allowed_updates=bot.allowed_updates,
            max_connections=bot.max_connections,
            drop_pending_updates=args.drop_pending_updates,
        )

    _run(bot, work)
    print(f"webhook of {args.name} set to {url} (with its secret token)")
    return 0


def delete_webhook(args: argparse.Namespace, settings: Settings) -> int:
    bot = _bot(settings, args.name)

    async def work(client: Bot) -> None:
        await client.delete_webhook(drop_pending_updates=args.drop_pending_updates)

    _run(bot, work)
    print(f"webhook of {args.name} deleted: updates wait for getUpdates (polling)")
    return 0


def show_info(args: argparse.Namespace, settings: Settings) -> int:
    bot = _bot(settings, args.name)

    async def work(client: Bot) -> list[str]:
        me = await client.get_me()
        hook = await client.get_webhook_info()
        lines = [
            f"bot @{me.username} (id {me.id}), configured for {bot.mode}",
            f"webhook: {hook.url or '(none: updates wait for getUpdates)'}",
            f"pending updates at Telegram: {hook.pending_update_count}",
        ]
        if hook.last_error_date is not None:
            when = hook.last_error_date.astimezone(UTC)
            lines.append(
                f"last delivery error: {when:%Y-%m-%d %H:%M:%S} UTC "
                f"{printable(hook.last_error_message or '')}"
            )
        if bot.mode == "polling" and hook.url:
            lines.append(
                f"problem: a webhook is set, so polling gets 409: "
                f"leadgate telegram delete-webhook {args.name}"
            )
        if bot.mode == "webhook" and not hook.url:
            lines.append(
                f"problem: no webhook is set: leadgate telegram set-webhook {args.name} --url …"
            )
        return lines

    for line in _run(bot, work):
        print(line)
    return 0


def download_file(args: argparse.Namespace, settings: Settings) -> int:
    bot = _bot(settings, args.name)

    async def work(client: Bot) -> Path:
        found = await client.get_file(args.file_id)
        if not found.file_path:
            raise SystemExit("leadgate: Telegram gave no path for that file (over 20 MB?)")
        target = Path(args.output or Path(found.file_path).name)
        await client.download_file(found.file_path, destination=target)
        return target

    target = _run(bot, work)
    print(f"wrote {target} ({target.stat().st_size} bytes) at {datetime.now(UTC):%H:%M:%S} UTC")
    return 0
