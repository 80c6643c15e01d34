"""The mailbox package as the core knows it: the email channel, [email], its init part."""

from __future__ import annotations

from connectors.email.connector import build
from connectors.email.settings import EmailSettings
from gateway.channels import ChannelDefaults, ChannelSpec
from gateway.models import Channel

INIT_SNIPPET = """\
# The company mailbox over IMAP (docs/channels/email.md): add a mailbox to switch it on.
# Passwords are better given by environment: LEADGATE_EMAIL__MAILBOXES__SALES__PASSWORD.
[email]
own_addresses = []                    # our own people: their mail never becomes a lead
# [email.mailboxes.sales]
# host = "imap.yandex.ru"
# security = "ssl"                    # or "starttls", "plain"
# username = "sales@example.ru"
# password = "..."
# folders = ["INBOX"]
# first_sync_days = 3                 # the first read takes the last N days of mail
# [email.smtp]                        # where auto-replies are sent through
# host = "smtp.yandex.ru"
# username = "sales@example.ru"
# password = "..."
# from_address = "sales@example.ru"
# from_name = "Отдел продаж"
# [email.auto_reply]
# when = "after_hours"                # or "always", "never"
# signature = "Отдел продаж, +7 495 000-00-00"
"""

SPEC = ChannelSpec(
    name="email",
    channels={
        Channel.EMAIL: ChannelDefaults(source_id="EMAIL", title="Письмо от {who}", label="Почта"),
    },
    section="email",
    settings=EmailSettings,
    init_snippet=INIT_SNIPPET,
    build=build,
)
