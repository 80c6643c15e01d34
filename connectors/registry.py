"""Every channel package the gateway runs: the only file that names them all.

The core finds `SPECS` through the entry point `leadgate.channels` (pyproject.toml), never
by importing this module. Adding a channel: its package declares a ChannelSpec (see
docs/development.md), and one line here lists it. Order matters: connectors are built,
mounted and shut down in this order.
"""

from __future__ import annotations

from connectors import orders, webform
from connectors.email import spec as email
from connectors.meta import spec as meta
from connectors.telegram import spec as telegram
from connectors.telephony import spec as telephony
from connectors.vk import spec as vk
from connectors.widget import spec as widget
from gateway.channels import ChannelSpec

SPECS: list[ChannelSpec] = [
    webform.SPEC,
    orders.SPEC,
    telephony.SPEC,
    email.SPEC,
    meta.SPEC,
    vk.SPEC,
    telegram.SPEC,
    widget.SPEC,
]
