"""The VK package as the core knows it: the vk channel, [vk], its init part."""

from __future__ import annotations

from connectors.vk.connector import build
from connectors.vk.settings import VkSettings
from gateway.channels import ChannelDefaults, ChannelSpec
from gateway.models import Channel

INIT_SNIPPET = """\
# VK communities (docs/channels/vk.md): add a community to switch it on. Its Callback API
# server (community -> Manage -> API usage -> Callback API) points to https://<host>/v1/vk.
# Secrets are better given by environment, e.g. LEADGATE_VK__COMMUNITIES='[{...}]'.
[vk]
# [[vk.communities]]
# group_id = 123456789
# confirmation = "a1b2c3d4"           # «Строка, которую должен вернуть сервер» (changes!)
# secret = "change-me-long-random"    # «Секретный ключ» of the Callback API server
# token = "vk1.a...."                 # community access key: names, replies
# catch_up_token = "vk1.a...."        # a community admin's user token: leadForms.getLeads catch-up
# api_version = "5.199"               # set the Callback API server to the same version
# wall_replies = "lead"               # or "activity", "off"
"""

SPEC = ChannelSpec(
    name="vk",
    channels={
        Channel.VK: ChannelDefaults(
            source_id="UC_VK", title="Сообщение ВКонтакте: {who}", label="ВКонтакте"
        ),
    },
    section="vk",
    settings=VkSettings,
    init_snippet=INIT_SNIPPET,
    build=build,
)
