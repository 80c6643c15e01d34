"""What a store holds, as counts and one checksum, read through the Store protocol alone.

Two stores with the same data answer every read the same, so they have the same
fingerprint whatever backs them: `leadgate store copy` prints one for each side. Claims
(who holds an outbox or inbox row right now) are left out: a copy starts with none.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic_core import to_json

from gateway.store.base import EventQuery, LeadQuery, Store

_PAGE = 500
_KINDS = (
    "leads",
    "events",
    "conversations",
    "messages",
    "outbox",
    "links",
    "checkpoints",
    "quarantine",
    "inbox",
)


@dataclass
class Fingerprint:
    counts: dict[str, int] = field(default_factory=dict)
    checksum: str = ""

    def line(self) -> str:
        shown = ", ".join(f"{name} {n}" for name, n in self.counts.items())
        return f"{shown}; sha256 {self.checksum}"


class _Digest:
    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.counts = dict.fromkeys(_KINDS, 0)

    def add(self, kind: str, value: Any) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.hash.update(kind.encode())
        self.hash.update(to_json(value, bytes_mode="base64"))
        self.hash.update(b"\n")


async def fingerprint(store: Store, sinks: Sequence[str] = ()) -> Fingerprint:
    """Leads with their events, every event (kept ones too) with its payload, the outbox,
    the links to each of `sinks`, checkpoints, transcripts, quarantine and the inbox."""
    digest = _Digest()
    lead_ids: list[str] = []
    cursor: str | None = None
    while page := await store.list_leads(LeadQuery(limit=_PAGE, before_id=cursor)):
        lead_ids += [lead.id for lead in page]
        cursor = page[-1].id
    for lead_id in lead_ids:
        lead = await store.get_lead(lead_id)
        digest.add("leads", lead)
        transcript = await store.transcript(lead_id)
        for conversation in transcript.conversations:
            digest.add("conversations", conversation)
        for message in transcript.messages:
            digest.add("messages", message)
    after: str | None = None
    while events := await store.list_events(EventQuery(after_id=after, limit=_PAGE)):
        for event in events:
            digest.add("events", event)
        after = events[-1].record.id
    last = 0
    while items := await store.outbox(None, _PAGE, after_id=last):
        for item in items:
            digest.add("outbox", replace(item, claimed_by=None, claimed_until=None))
        last = items[-1].id
    for sink in sorted(sinks):
        for start in range(0, len(lead_ids), _PAGE):
            links = await store.lead_links(sink, lead_ids[start : start + _PAGE])
            for lead_id in sorted(links):
                if links[lead_id].remote_id is not None:
                    digest.add("links", (sink, lead_id, links[lead_id].remote_id))
    for name, value in (await store.list_checkpoints()).items():
        digest.add("checkpoints", (name, value))
    last = 0
    while entries := await store.list_quarantine(limit=_PAGE, after_id=last):
        for kept in entries:
            digest.add("quarantine", kept)
        last = entries[-1].id
    last = 0
    while inbox := await store.list_inbox(None, _PAGE, after_id=last):
        for entry in inbox:
            digest.add("inbox", replace(entry, claimed_by=None, claimed_until=None))
        last = inbox[-1].id
    return Fingerprint(digest.counts, digest.hash.hexdigest())
