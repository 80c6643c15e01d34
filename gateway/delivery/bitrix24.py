"""The Bitrix24 sink: leads by crm.lead.add, later contacts as timeline comments.

One deliver() call is a few `batch` requests, each within the leaky bucket:
1. look-ups, only for items an earlier attempt may have reached: the lead by
   ORIGINATOR_ID + ORIGIN_ID (crm.lead.list), so a lost answer never makes a second lead;
2. optionally crm.duplicate.findbycomm (and which found leads are still open), so a person
   already in the CRM is attached to, not duplicated;
3. crm.lead.add for the new leads (or a comment on the person's open lead);
4. merged events (gateway.delivery.b24merge): the status of their lead's CRM lead; a
   timeline comment (plus crm.lead.update of what the CRM lead lacks) while it is in work,
   a new CRM lead for a new request once it is closed.
A throttle or a credentials error stops the call: what is undecided gets the same answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from gateway.coordination import Coordination, InProcessCoordination
from gateway.delivery.b24client import MAX_BATCH, B24Client, B24Error, LeakyBucket, portal_of
from gateway.delivery.b24cycle import Cycle
from gateway.delivery.settings import Bitrix24Settings
from gateway.delivery.sink import Delivery, Result
from gateway.models import Channel


class Bitrix24Sink:
    name = "bitrix24"
    marks_attempts = True

    def __init__(
        self,
        settings: Bitrix24Settings,
        *,
        sellers: Mapping[str, int | None],
        tz: ZoneInfo,
        seller_names: Mapping[str, str] | None = None,
        sources: Mapping[Channel, str] | None = None,
        region: str = "RU",
        record: Callable[[str], None] | None = None,
        coordination: Coordination | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.webhook_url is None:
            raise ValueError("delivery.bitrix24.webhook_url is not set")
        self.settings = settings
        self.sellers = dict(sellers)
        self.tz = tz
        self.seller_names = dict(seller_names or {})  # seller id -> name, for call comments
        self.sources = dict(sources or {})  # SOURCE_ID by channel, for repeat-request leads
        self.region = region  # to compare the CRM's phones with ours
        url = settings.webhook_url.get_secret_value()
        # Standing alone (tests, tools) the sink keeps its budget in-process; the gateway
        # passes its Coordination, shared by every replica.
        bucket = LeakyBucket(
            coordination or InProcessCoordination(clock=clock),
            portal_of(url),
            settings.burst,
            settings.rate,
            full=settings.assume_busy_on_start,
        )
        self.client = B24Client(
            url,
            bucket=bucket,
            timeout=settings.timeout_seconds,
            operation_wait=settings.operation_limit_wait_seconds,
            record=record,
        )

    async def start(self) -> None:
        await self.client.start()

    async def close(self) -> None:
        await self.client.close()

    async def ready(self) -> None:
        await self.client.bucket.wait_ready()

    async def deliver(self, batch: Sequence[Delivery]) -> list[Result]:
        cycle = Cycle(self, batch)
        await cycle.run()
        return cycle.results()

    async def run_batch(self, commands: Mapping[str, str]) -> dict[str, Any]:
        """Every command's result or B24Error; never raises for a Bitrix24 answer."""
        out: dict[str, Any] = {}
        keys = list(commands)
        for start in range(0, len(keys), MAX_BATCH):
            chunk = {k: commands[k] for k in keys[start : start + MAX_BATCH]}
            try:
                results, errors = await self.client.batch(chunk)
            except B24Error as exc:
                if exc.kind == "permanent":
                    # The request as a whole was refused (400 on `batch`): we cannot tell
                    # which command is to blame, so it is not a verdict on any single one.
                    exc.kind = "retry"
                out.update(dict.fromkeys(chunk, exc))
                if exc.kind in ("halt", "throttle"):
                    break  # the rest would meet the same answer: do not send it
                continue
            for key in chunk:
                if key in errors:
                    out[key] = errors[key]
                elif key in results:
                    out[key] = results[key]
                else:
                    out[key] = B24Error("retry", "NOT_RUN", "batch did not run this command")
        for key in keys:
            out.setdefault(key, B24Error("throttle", "NOT_SENT", "stopped before sending"))
        return out
