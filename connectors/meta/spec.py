"""The Meta package as the core knows it: the facebook and instagram channels, [meta], its
init part."""

from __future__ import annotations

from connectors.meta.connector import build
from connectors.meta.settings import MetaSettings
from gateway.channels import ChannelDefaults, ChannelSpec
from gateway.models import Channel

INIT_SNIPPET = """\
# Facebook and Instagram through a Meta app (docs/channels/meta.md). Both are blocked in
# Russia and Meta is designated there: connecting them is the operator's decision.
# Set app_secret and verify_token to open GET/POST /v1/meta.
[meta]
# app_secret = "paste-the-app-secret"  # App settings -> Basic -> App secret
# verify_token = "change-me-to-a-long-random-string"  # the webhook's Verify Token
# graph_api_version = "v25.0"
# reply_tag = "HUMAN_AGENT"           # a seller may answer up to 7 days; "" = 24 h only
# [[meta.pages]]
# id = "153125381133"                 # the Page id
# token = "paste-the-page-token"      # a Page access token (pages_messaging, leads_retrieval)
# [[meta.instagram]]
# id = "17841400000000000"            # the Instagram professional account id
# token = "paste-the-page-token"      # the linked Page's token (api = "page")
# api = "page"                        # or "instagram_login" (graph.instagram.com)
"""

SPEC = ChannelSpec(
    name="meta",
    channels={
        Channel.FACEBOOK: ChannelDefaults(
            source_id="UC_FACEBOOK", title="Сообщение Facebook: {who}", label="Facebook"
        ),
        Channel.INSTAGRAM: ChannelDefaults(
            source_id="UC_INSTAGRAM", title="Сообщение Instagram: {who}", label="Instagram"
        ),
    },
    section="meta",
    settings=MetaSettings,
    init_snippet=INIT_SNIPPET,
    build=build,
)
