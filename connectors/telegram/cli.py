"""`leadgate telegram set-webhook|delete-webhook|info|download NAME`: the parser. The
commands (connectors.telegram.commands) import aiogram only when one runs."""

from __future__ import annotations

import argparse

from gateway.config import Settings


def _lazy(name: str) -> object:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        from connectors.telegram import commands

        code: int = getattr(commands, name)(args, settings)
        return code

    return run


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("telegram", help="Telegram bots: webhook, status, files")
    actions = parser.add_subparsers(dest="action")
    hook = actions.add_parser("set-webhook", help="register the bot's webhook with its secret")
    hook.add_argument("name", help="the bot, as in [telegram.bots.NAME]")
    hook.add_argument("--url", help="public https URL (default: the bot's webhook_url)")
    hook.add_argument("--drop-pending-updates", action="store_true")
    hook.set_defaults(channel_command=_lazy("set_webhook"))
    unhook = actions.add_parser("delete-webhook", help="stop webhook delivery (for polling)")
    unhook.add_argument("name")
    unhook.add_argument("--drop-pending-updates", action="store_true")
    unhook.set_defaults(channel_command=_lazy("delete_webhook"))
    info = actions.add_parser("info", help="the bot and its webhook as Telegram sees them")
    info.add_argument("name")
    info.set_defaults(channel_command=_lazy("show_info"))
    download = actions.add_parser("download", help="fetch a file a customer sent (by its ref)")
    download.add_argument("name")
    download.add_argument("file_id", help="the attachment's ref in the lead's messages")
    download.add_argument("-o", "--output", help="where to write it (default: its name)")
    download.set_defaults(channel_command=_lazy("download_file"))
