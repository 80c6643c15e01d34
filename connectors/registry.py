"""Every channel the gateway knows; adding a channel is one line here."""

from __future__ import annotations

from connectors import orders, webform
from connectors.base import Connector, ConnectorContext, ConnectorFactory
from connectors.email import connector as email
from connectors.telephony import connector as telephony

FACTORIES: list[ConnectorFactory] = [
    webform.build,
    orders.build,
    telephony.build,
    email.build,
]


def build_all(ctx: ConnectorContext) -> list[Connector]:
    return [c for factory in FACTORIES if (c := factory(ctx)) is not None]
