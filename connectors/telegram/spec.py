"""The Telegram package as the core knows it: the telegram channel, [telegram], its init
part and its `leadgate telegram ...` commands."""

from __future__ import annotations

from connectors.telegram.cli import add_parser
from connectors.telegram.settings import TelegramSettings
from gateway.channels import ChannelDefaults, ChannelSpec, Connector, ConnectorContext
from gateway.models import Channel


def build(ctx: ConnectorContext) -> Connector | None:
    settings = ctx.settings.section(TelegramSettings)
    if not settings.bots:
        return None
    # aiogram's types take seconds to import: only a gateway with a bot pays for them,
    # not every `leadgate` command (the spec is loaded by all of them).
    from connectors.telegram.connector import TelegramConnector

    return TelegramConnector(ctx, settings)


INIT_SNIPPET = """\
# Telegram bots (docs/channels/telegram.md): add a bot to switch it on. Tokens and secrets
# are better given by environment: LEADGATE_TELEGRAM__BOTS__SHOP__TOKEN, ...__SECRET_TOKEN.
[telegram]
# [telegram.bots.shop]
# token = "123456789:AAExampleExampleExampleExampleExam"   # from @BotFather
# mode = "webhook"                     # or "polling" (no public URL needed)
# secret_token = "change-me-to-32-random-letters"     # webhook mode: required
# webhook_url = "https://leads.example.ru/v1/telegram/shop"
# start_text = { ru = "Здравствуйте! Напишите, что вас интересует." }
"""

SPEC = ChannelSpec(
    name="telegram",
    channels={
        Channel.TELEGRAM: ChannelDefaults(
            source_id="UC_TELEGRAM", title="Сообщение Telegram: {who}", label="Telegram"
        ),
    },
    section="telegram",
    settings=TelegramSettings,
    init_snippet=INIT_SNIPPET,
    build=build,
    cli=add_parser,
)
