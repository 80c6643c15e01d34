"""The commented leadgate.toml that `leadgate init` writes: the core's part below, then
each channel spec's own snippet (gateway.channels), so every channel's section is there."""

from __future__ import annotations

import secrets

from gateway import channels

CORE_TEMPLATE = """\
# leadgate configuration. Every key is optional: what is left out takes the default shown.
# Environment variables override the file: LEADGATE_SERVER__PORT=9000, LEADGATE_LOG_LEVEL=DEBUG.
# Check it with `leadgate check-config`; docs/configuration.md lists every key.

phone_region = "RU"          # how phone numbers without +country are read
log_level = "INFO"

[server]
host = "127.0.0.1"
port = 8080
max_body_bytes = 1048576     # bigger bodies get 413
trusted_proxies = []         # e.g. ["10.0.0.0/8"]: X-Forwarded-For is believed only from these
header_timeout_seconds = 10  # slow clients: the request head must arrive within this
body_timeout_seconds = 30    # ... and the body within this after the head
keepalive_seconds = 75       # idle kept-alive connections close after this
max_connections = 1000       # more get 503 busy; keep below `ulimit -n`

[store]
path = "leadgate.db"         # SQLite file (WAL); one gateway process writes it

[calendar]
timezone = "Europe/Moscow"
country = "RU"               # official holidays and transfers of the production calendar
reaction_minutes = 15        # SLA: business minutes to react to a new lead
# extra_holidays = {{ 2026-12-30 = "Корпоратив" }}
# extra_workdays = [2026-12-26]

[calendar.hours]             # Mon-Fri 10:00-19:00; a day left out is closed
mon = ["10:00-19:00"]
tue = ["10:00-19:00"]
wed = ["10:00-19:00"]
thu = ["10:00-19:00"]
fri = ["10:00-19:00"]

[dedup]
window_days = 30             # a person's new contact within this joins their open lead

[assignment]
strategy = "round_robin"     # or "in_order"
sticky = true                # a returning person goes back to their seller

# First-line sellers. crm_user_id is the Bitrix24 user id (ASSIGNED_BY_ID).
[[sellers]]
id = "ivanova"
name = "Анна Иванова"
crm_user_id = 1
active = true
# schedule = {{ mon = ["10:00-15:00"], tue = ["10:00-15:00"] }}

[ratelimit]                  # per client IP on public forms
requests = 20
per_seconds = 60
exempt = []                  # the website backend's address, if it posts forms for users

[orders.tokens]              # bearer tokens for POST /v1/orders, by name
site = "{orders_token}"

[admin.tokens]               # bearer tokens for GET /v1/leads
ops = "{admin_token}"

[screen]                     # what makes a lead JUNK
blocked_phones = []
own_phones = []               # the company's own numbers: never a customer's phone
blocked_emails = []
blocked_domains = []
stop_words = []

# Where leads go: "local" keeps them in leadgate only; "bitrix24" or "webhook" send them on
# through the durable outbox (docs/delivery/bitrix24.md).
[delivery]
sink = "local"
# [delivery.bitrix24]
# webhook_url = "https://your-portal.bitrix24.ru/rest/1/xxxxxxxxxxxxxxxx/"  # a secret
# category_field = "UF_CRM_1700000000"          # «Какой категорией оборудования интересовался»
# category_values = {{ "Крупное" = "45", "Мелкое" = "47" }}  # the list items' ids
# equipment_field = "UF_CRM_1700000001"         # «Вероятное оборудование к покупке и его цена»
# find_duplicates = true                         # join people already in the CRM

# Bitrix24 Open Lines: chats into a line, sellers answer there (docs/delivery/open-lines.md).
# [openlines]
# portal = "your-portal.bitrix24.ru"
# client_id = "local.xxxxxxxxxxxxxx.xxxxxxxx"   # the local application's
# client_secret = "..."                         # a secret: LEADGATE_OPENLINES__CLIENT_SECRET
# public_url = "https://leads.example.ru"       # where Bitrix24 reaches this gateway
# line = 1                                      # the Open Line the chats go to

# The website form; add more [forms.NAME] tables for other forms.
[forms.site]
title = "Заявка с сайта"
honeypot_field = "website"   # hidden field; bots fill it
# thank_you_url = "https://example.ru/spasibo"  # default: the gateway's own thank-you page
# allowed_origins = ["https://example.ru"]      # pages that may post this form with fetch()

[forms.site.fields.name]
label = "Имя"
required = true
maps_to = "name"
max_length = 200

[forms.site.fields.phone]
label = "Телефон"
kind = "phone"
required = true
maps_to = "phone"

[forms.site.fields.email]
label = "Email"
kind = "email"
maps_to = "email"

[forms.site.fields.equipment_type]
label = "Тип оборудования"
kind = "choice"
choices = ["Крупное", "Мелкое"]
maps_to = "equipment_category"

[forms.site.fields.comment]
label = "Комментарий"
kind = "textarea"
maps_to = "comment"
"""


def _sources() -> str:
    """The SOURCE_ID defaults, as the channel specs declare them."""
    lines = [
        "# Bitrix24 SOURCE_ID by channel: the defaults; a channel left out keeps its own.",
        "# [sources]",
    ]
    lines += [f'# {ch.value} = "{source}"' for ch, source in channels.default_sources().items()]
    return "\n".join(lines) + "\n"


def render_config() -> str:
    core = CORE_TEMPLATE.format(
        orders_token=secrets.token_urlsafe(32), admin_token=secrets.token_urlsafe(32)
    )
    # Snippets are appended as written (not .format()ed): their braces are their own.
    parts = [core, _sources(), *(s.init_snippet for s in channels.specs() if s.init_snippet)]
    return "\n".join(part.rstrip("\n") + "\n" for part in parts)
