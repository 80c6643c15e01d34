"""Every channel the gateway knows; adding a channel is one line here."""

from __future__ import annotations

from connectors import orders, webform
from connectors.base import Connector, ConnectorContext, ConnectorFactory

FACTORIES: list[ConnectorFactory] = [
    webform.build,
    orders.build,
]


def build_all(ctx: ConnectorContext) -> list[Connector]:
    return [c for factory in FACTORIES if (c := factory(ctx)) is not None]
