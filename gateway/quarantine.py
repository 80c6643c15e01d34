"""Quarantined input a person asked to release (`leadgate quarantine release ID`).

The command line only records the request (the entry's state becomes `release`): it cannot
make events itself, since one gateway process writes the store. This task, run by the
gateway (a singleton: one replica does it), takes the requests and hands each entry to the
connector of its channel:

- a connector that can run its input again (gateway.channels.ReplaysQuarantine) does so
  through the pipeline; the entry becomes `released` with the receipt in its note, or goes
  back to `kept` with the reason when it still cannot be read;
- otherwise, or when the channel is not configured here, the entry becomes `released` for
  a person to act on by hand, and its note says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from gateway.channels import Connector, ReplayRefused, ReplaysQuarantine, TaskSpec
from gateway.identity import mask_text
from gateway.store.base import QuarantineEntry, QuarantineState, Store, StoreUnavailable

log = logging.getLogger(__name__)

TASK = "quarantine"
POLL_SECONDS = 2.0
BATCH = 50


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Releaser:
    def __init__(
        self,
        store: Store,
        by_channel: Mapping[str, Connector],
        *,
        clock: Callable[[], datetime] = _utc_now,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.store = store
        self.by_channel = by_channel
        self.clock = clock
        self.poll_seconds = poll_seconds

    def task(self) -> TaskSpec:
        return TaskSpec(TASK, self.run, singleton=True)

    async def run(self) -> None:
        while True:
            await self.release_requested()
            await asyncio.sleep(self.poll_seconds)

    async def release_requested(self) -> int:
        """Answer every pending request; how many were answered."""
        answered = 0
        while True:
            entries = await self.store.list_quarantine(state=QuarantineState.RELEASE, limit=BATCH)
            for entry in entries:
                await self.release(entry)
            answered += len(entries)
            if len(entries) < BATCH:
                return answered

    async def release(self, entry: QuarantineEntry) -> QuarantineState:
        connector = self.by_channel.get(entry.channel)
        if connector is None or not isinstance(connector, ReplaysQuarantine):
            why = "is not configured here" if connector is None else "cannot run it again"
            note = f"released to a person: the {entry.channel} channel {why}; act on it by hand"
            return await self._mark(entry, QuarantineState.RELEASED, note)
        try:
            receipt = await connector.replay_quarantined(entry)
        except (StoreUnavailable, asyncio.CancelledError):
            raise  # the request stays; the supervisor restarts the task
        except ReplayRefused as exc:
            return await self._mark(entry, QuarantineState.KEPT, f"run again: {exc}")
        except Exception as exc:  # a connector's bug must not make the entry vanish
            log.exception("quarantine %d: running it again failed", entry.id)
            note = f"run again: failed ({type(exc).__name__}: {exc})"
            return await self._mark(entry, QuarantineState.KEPT, note)
        if receipt is None:
            note = "run again: read, but it makes no event"
        else:
            lead = f"lead {receipt.lead_id}" if receipt.lead_id else "no lead"
            note = f"run again: event {receipt.event_id}, {lead} ({receipt.outcome.value})"
        return await self._mark(entry, QuarantineState.RELEASED, note)

    async def _mark(
        self, entry: QuarantineEntry, state: QuarantineState, note: str
    ) -> QuarantineState:
        note = mask_text(note)[:500]
        # Only from `release`: a person who deleted or re-kept it meanwhile has the last word.
        await self.store.mark_quarantine(
            entry.id, state, note, self.clock(), expect=QuarantineState.RELEASE
        )
        log.info("quarantine %d (%s): %s — %s", entry.id, entry.channel, state.value, note)
        return state
