"""Channels of the LeadEvent contract that have no connector yet: VK, Facebook, Instagram,
Telegram.

Their CRM defaults exist already (a lead of such a channel may be created through the API or
a form, and ops may set its SOURCE_ID), so this spec holds them until each channel's own
package arrives: that package declares the channel in its spec, and the line here goes.
"""

from __future__ import annotations

from gateway.channels import ChannelDefaults, ChannelSpec, Connector, ConnectorContext
from gateway.models import Channel


def build(ctx: ConnectorContext) -> Connector | None:
    return None  # nothing to run until the channel's package exists


SPEC = ChannelSpec(
    name="planned",
    channels={
        Channel.VK: ChannelDefaults(
            source_id="UC_VK", title="Сообщение ВКонтакте: {who}", label="ВКонтакте"
        ),
        Channel.FACEBOOK: ChannelDefaults(
            source_id="UC_FACEBOOK", title="Сообщение Facebook: {who}", label="Facebook"
        ),
        Channel.INSTAGRAM: ChannelDefaults(
            source_id="UC_INSTAGRAM", title="Сообщение Instagram: {who}", label="Instagram"
        ),
        Channel.TELEGRAM: ChannelDefaults(
            source_id="UC_TELEGRAM", title="Сообщение Telegram: {who}", label="Telegram"
        ),
    },
    build=build,
)
