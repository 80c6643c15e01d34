"""The local sink: the built-in store already holds the lead, so delivery is a formality.

It exists so the outbox means the same thing with or without a CRM: rows are marked
delivered right away (and purged later) instead of piling up on the embedded default.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.delivery.sink import Delivery, Result, Status
from gateway.store.base import OutboxItem


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
        return self.settle([d.item for d in batch])

    def settle(self, items: Sequence[OutboxItem]) -> list[Result]:
        """Delivered, each: the worker calls this with the bare rows, no lead loaded."""
        return [Result(item.id, Status.DELIVERED) for item in items]
