"""The local sink: the built-in store already holds the lead, so delivery is a formality.

It exists so the outbox means the same thing with or without a CRM: rows are marked
delivered right away (and purged later) instead of piling up on the embedded default.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.delivery.sink import Delivery, Result, Status


class LocalSink:
    name = "local"
    marks_attempts = False  # nothing leaves the process: no trace needed before "sending"

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ready(self) -> None:
        return None

    async def deliver(self, batch: Sequence[Delivery]) -> list[Result]:
        # Rarely called: with this sink the store writes outbox rows already delivered.
        # Rows reach here only when they were made under another sink before a switch.
        return [Result(d.item.id, Status.DELIVERED) for d in batch]
