"""What becomes of a verified event before Bitrix24 gets its 200.

Bitrix24 does not send an event again (api-reference/events: "No retries"), so what it
carries is made durable first and handled after:
- OnImConnectorMessageAdd: one inbox entry per answer, keyed by Bitrix24's ids for it
  (a repeat of the same answer is a duplicate, kept once);
- OnImConnectorDialogFinish: one inbox entry per closed dialog;
- OnImConnectorStatusDelete: the connector was switched off on the line: recorded (and
  on /readyz) at once, there is nothing to do later;
- anything else bound by hand: ignored.
An authentic event whose content is not what the docs describe is quarantined (kept for
a person) and refused with 400.
"""

from __future__ import annotations

from typing import Any

from gateway.delivery.openlines.answers import INBOX, finish_key
from gateway.delivery.openlines.events import (
    DIALOG_FINISH,
    MESSAGE_ADD,
    STATUS_DELETE,
    EventInvalid,
    dialog_finishes,
    seller_answers,
)
from gateway.delivery.openlines.form import text
from gateway.delivery.openlines.tokens import TokenKeeper
from gateway.errors import ApiError
from gateway.inbox import Inbox, InboxEntry
from gateway.store.base import Quarantined, Store


class EventIntake:
    def __init__(self, inbox: Inbox, store: Store, keeper: TokenKeeper, line: int | None) -> None:
        self.inbox = inbox
        self.store = store
        self.keeper = keeper
        self.line = line

    async def __call__(self, name: str, fields: dict[str, Any], raw: bytes) -> str:
        member = text(fields, "auth", "member_id") or (
            self.keeper.tokens.member_id if self.keeper.tokens else "portal"
        )
        try:
            if name == MESSAGE_ADD:
                keys = [a.key for a in seller_answers(fields)]
            elif name == DIALOG_FINISH:
                keys = [finish_key(f.chat, f.session) for f in dialog_finishes(fields)]
            elif name == STATUS_DELETE:
                line = text(fields, "data", "LINE")
                await self.keeper.set_line(
                    False, int(line) if line and line.isdigit() else self.line
                )
                return "accepted"
            else:
                return "ignored"
        except EventInvalid as exc:
            await self.store.quarantine(Quarantined(INBOX, f"{name}: {exc}", raw))
            raise ApiError(400, "invalid_event", str(exc)) from None
        if not keys:
            return "ignored"
        entries = [InboxEntry(INBOX, member, key, raw) for key in dict.fromkeys(keys)]
        kept = await self.inbox.put(entries)
        return "accepted" if any(kept) else "duplicate"
