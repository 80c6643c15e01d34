"""The widget package as the core knows it: the `chat` channel, `[widget]`, its init part.

`callback` stays declared by the forms (connectors.webform): a callback request is a form
post with a phone, and a site's own "call me" form makes the same lead through /v1/forms
with no widget at all. The widget is one more producer of it; `chat` is the widget's own,
since its conversations, visitors and sockets live here.
"""

from __future__ import annotations

from connectors.widget.connector import build
from connectors.widget.settings import WidgetSection
from gateway.channels import ChannelDefaults, ChannelSpec
from gateway.models import Channel

INIT_SNIPPET = """\
# The site widget (docs/channels/widget.md): chat, «Перезвоните мне» and a form behind one
# tag, <script async src="https://GATEWAY/v1/widget/site.js"></script>. Off until a table
# widget.NAME below is filled in; NAME (here "site") is the script's name.
[widget]
# [widget.site]
# allowed_origins = ["https://www.example.ru"]        # the pages that show it
# policy_url = "https://www.example.ru/privacy"       # 152-ФЗ: what the visitor consents to
# policy_version = "2025-01-10"
# title = "Мы на связи"
# color = "#1f5fbf"
# tabs = ["chat", "callback", "form"]
# off_hours = "hidden"                                 # or "form_and_callback"
"""

SPEC = ChannelSpec(
    name="widget",
    channels={
        Channel.CHAT: ChannelDefaults(
            source_id="WEB", title="Чат на сайте: {who}", label="Чат на сайте"
        ),
    },
    section="widget",
    settings=WidgetSection,
    init_snippet=INIT_SNIPPET,
    build=build,
)
