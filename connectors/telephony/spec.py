"""The telephony package as the core knows it: the phone channel, [telephony], its init part."""

from __future__ import annotations

from connectors.telephony.connector import build
from connectors.telephony.settings import TelephonySettings
from gateway.channels import ChannelDefaults, ChannelSpec
from gateway.models import Channel

INIT_SNIPPET = """\
# Telephony webhooks (docs/channels/telephony.md): set a provider's secret to switch it on.
[telephony]
blocked_numbers = []                  # calls from these are refused and kept as JUNK
# outgoing_calls = true               # a seller's outgoing call joins the person's open lead
# [telephony.zadarma]
# api_secret = "..."                  # Zadarma cabinet: API and integrations
# after_hours_ivr = "file-id"         # the autoresponder played after hours
# sticky_redirect = true              # a returning caller goes to their seller's extension
# [telephony.mango]
# api_key = "..."                     # «Уникальный код вашей АТС»
# api_salt = "..."                    # «Ключ для создания подписи»
# [telephony.cti]
# token = "change-me-to-a-long-random-string"  # POST /v1/telephony/cti/<token>
"""

SPEC = ChannelSpec(
    name="telephony",
    channels={
        Channel.PHONE: ChannelDefaults(source_id="CALL", title="Звонок с {phone}", label="Телефон"),
    },
    section="telephony",
    settings=TelephonySettings,
    init_snippet=INIT_SNIPPET,
    build=build,
)
