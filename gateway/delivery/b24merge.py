"""Merged events on Bitrix24: which CRM lead each goes to, and what it does there.

A merge (a later contact of a person whose lead is already in Bitrix24) goes to that CRM
lead while a seller works it (STATUS_SEMANTIC_ID "P"). Once the CRM lead is closed
(converted: "S"; junk or lost: "F") nobody reads its timeline any more, so a new *request*
of the customer becomes a NEW CRM lead, with ORIGIN_ID "<lead id>:<event id>"; later merges
go to the newest of those ("=%ORIGIN_ID" = "<lead id>:%") while it is in work. Facts
about a call (its result, its recording) and our own outgoing calls never make a lead:
they follow the call to the newest CRM lead, closed or not.

Each merge also fills in what the CRM lead lacks and the event brings (crm.lead.update of
empty fields only, phones and emails added), in the same request as its comment.

Rounds, each one `batch` request, only when needed:
1. crm.lead.get of the linked CRM leads (status, current values), and the repeat leads
   of leads whose merge may have landed before (the crash-safe look-up by ORIGIN_ID);
2. the repeat leads of leads whose CRM lead turned out closed;
3. crm.lead.add for requests whose CRM lead is closed;
4. crm.timeline.comment.list, for comments an earlier attempt may have left;
5. crm.timeline.comment.add, with crm.lead.update where something is to be filled in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.delivery.b24client import B24Error, command
from gateway.delivery.b24mapping import (
    NAME_KEYS,
    event_comment,
    fill_fields,
    repeat_lead_fields,
    repeat_origin,
    with_filled,
)
from gateway.delivery.b24texts import is_request
from gateway.delivery.sink import Delivery, Status
from gateway.store.base import OutboxState

if TYPE_CHECKING:
    from gateway.delivery.b24cycle import Cycle

log = logging.getLogger(__name__)


@dataclass(slots=True)
class CrmLead:
    """A CRM lead as one read (or our own add) showed it."""

    id: str
    semantic: str | None  # STATUS_SEMANTIC_ID: "P" in work, "S" converted, "F" junk / lost
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def in_work(self) -> bool:
        return self.semantic in (None, "", "P")

    @property
    def origin(self) -> str | None:
        value = self.values.get("ORIGIN_ID")
        return str(value) if value else None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CrmLead:
        semantic = row.get("STATUS_SEMANTIC_ID")
        return cls(str(row["ID"]), str(semantic) if semantic else None, dict(row))


class Merges:
    """The merge step of one Cycle."""

    def __init__(self, cycle: Cycle) -> None:
        self.c = cycle
        self.s = cycle.s
        self.states: dict[str, CrmLead] = {}  # CRM lead id -> as read in round 1
        self.repeats: dict[str, list[CrmLead]] = {}  # lead id -> its repeat leads, newest first

    async def run(self, merges: list[Delivery], creating: set[str]) -> None:
        ready = self._ready(merges, creating)
        if not ready:
            return
        known = {crm_id for crm_id, _ in ready if crm_id not in self.c.fresh}
        early = {d.item.lead_id for _, d in ready if d.maybe_sent}
        await self._read(ready, known, early)
        late = {
            d.item.lead_id
            for crm_id, d in ready
            if self.c.open(d)
            and d.item.lead_id not in self.repeats
            and not self._state(crm_id).in_work
        }
        await self._read(ready, set(), late)
        if self.c.stop is not None:
            return
        plan: dict[str, list[Delivery]] = {}
        targets: dict[str, CrmLead] = {}
        create: list[tuple[Delivery, CrmLead]] = []
        later: list[Delivery] = []
        for crm_id, d in ready:
            if not self.c.open(d):
                continue
            lead_id = d.item.lead_id
            repeats = self.repeats.get(lead_id, [])
            origin = repeat_origin(lead_id, d.item.event_id)
            mine = next((r for r in repeats if r.origin == origin), None)
            if mine is not None:  # an earlier attempt made it; the answer was lost
                log.info("merge %s was already in Bitrix24 as lead %s", d.item.event_id, mine.id)
                self.c.decide(d, Status.DELIVERED, remote_id=mine.id)
                continue
            linked = self._state(crm_id)
            target = linked if linked.in_work or not repeats else repeats[0]
            if target.in_work or not is_request(d.event):
                plan.setdefault(target.id, []).append(d)
                targets[target.id] = target
            elif any(lead_id == x.item.lead_id for x, _ in create):
                later.append(d)  # one new CRM lead per lead: the first request makes it
            else:
                create.append((d, target))
        created = await self._create(create)
        for d in later:
            new = created.get(d.item.lead_id)
            if new is None:
                self.c.decide(d, Status.WAIT, error="waiting for a new CRM lead of its lead")
            else:
                plan.setdefault(new.id, []).append(d)
                targets[new.id] = new
        await self._comment(plan, targets)

    def _ready(self, merges: list[Delivery], creating: set[str]) -> list[tuple[str, Delivery]]:
        ready: list[tuple[str, Delivery]] = []
        for d in merges:
            crm_id = self.c.remote.get(d.item.lead_id)
            if crm_id is not None:
                ready.append((crm_id, d))
            elif d.lead_state is OutboxState.DEAD:
                self.c.decide(
                    d,
                    Status.DEAD,
                    error="its lead is in the dead-letter queue: retry the lead first",
                )
            elif d.lead_state is OutboxState.PENDING or d.item.lead_id in creating:
                self.c.decide(d, Status.WAIT, error="waiting for its lead to reach Bitrix24")
            else:
                self.c.decide(d, Status.DEAD, error="its lead is not in Bitrix24 (not found)")
        return ready

    def _state(self, crm_id: str) -> CrmLead:
        return self.c.fresh.get(crm_id) or self.states.get(crm_id) or CrmLead(crm_id, None)

    # --- reads ---------------------------------------------------------------------------

    def _select(self) -> list[str]:
        custom = [f for f in (self.s.category_field, self.s.equipment_field) if f]
        return [
            "ID",
            "ORIGIN_ID",
            "STATUS_ID",
            "STATUS_SEMANTIC_ID",
            *NAME_KEYS,
            "COMPANY_TITLE",
            "CONTACT_ID",
            "COMPANY_ID",
            "PHONE",
            "EMAIL",
            *custom,
        ]

    async def _read(
        self, ready: list[tuple[str, Delivery]], crm_ids: Iterable[str], lead_ids: Iterable[str]
    ) -> None:
        """crm.lead.get of `crm_ids`; the repeat leads of `lead_ids`; one request."""
        if self.c.stop is not None:
            return
        gets = {f"g{i}": crm_id for i, crm_id in enumerate(sorted(crm_ids))}
        lists = {f"r{i}": lead_id for i, lead_id in enumerate(sorted(lead_ids))}
        commands = {key: command("crm.lead.get", {"id": crm_id}) for key, crm_id in gets.items()}
        for key, lead_id in lists.items():
            commands[key] = command(
                "crm.lead.list",
                {
                    "filter": {
                        "ORIGINATOR_ID": self.s.originator_id,
                        "=%ORIGIN_ID": repeat_origin(lead_id, "%"),
                    },
                    "select": self._select(),
                    "order": {"ID": "DESC"},
                },
            )
        if not commands:
            return
        answers = await self.c.sink.run_batch(commands)
        for key, crm_id in gets.items():
            answer = answers[key]
            if isinstance(answer, Mapping) and answer.get("ID") is not None:
                self.states[crm_id] = CrmLead.from_row(answer)
                continue
            err = answer if isinstance(answer, B24Error) else None
            err = err or B24Error("retry", "BAD_ANSWER", f"crm.lead.get {crm_id}: no lead")
            for linked, d in ready:
                if linked == crm_id and self.c.open(d):
                    self.c.fail(d, err)
        for key, lead_id in lists.items():
            answer = answers[key]
            if isinstance(answer, B24Error):
                for _, d in ready:
                    if d.item.lead_id == lead_id and self.c.open(d):
                        self.c.fail(d, answer)
                continue
            rows = [row for row in answer or [] if isinstance(row, Mapping) and row.get("ID")]
            # Only ours: ORIGIN_ID exactly "<lead id>:<something>".
            found = [CrmLead.from_row(row) for row in rows]
            prefix = repeat_origin(lead_id, "")
            self.repeats[lead_id] = sorted(
                (r for r in found if (r.origin or "").startswith(prefix)),
                key=lambda r: int(r.id),
                reverse=True,
            )

    # --- a new CRM lead for a request whose CRM lead is closed ------------------------------

    async def _create(self, create: list[tuple[Delivery, CrmLead]]) -> dict[str, CrmLead]:
        commands: dict[str, tuple[Delivery, str]] = {}
        sent: dict[int, dict[str, Any]] = {}
        for i, (d, previous) in enumerate(create):
            lead, event = d.lead, d.event
            source = lead.source_id
            if event is not None and event.channel != lead.channel:
                source = self.c.sink.sources.get(event.channel, lead.source_id)
            fields = repeat_lead_fields(
                lead,
                event,
                d.item.event_id,
                self.s,
                previous_id=previous.id,
                previous_semantic=previous.semantic,
                source_id=source,
                assigned_by=self.c.sink.sellers.get(lead.assigned_to or ""),
                tz=self.c.sink.tz,
            )
            # The contact / company the closed lead was converted into: the seller sees
            # the customer's history on the new lead.
            for key in ("CONTACT_ID", "COMPANY_ID"):
                value = previous.values.get(key)
                if value not in (None, "", "0", 0):
                    fields[key] = value
            params: dict[str, Any] = {"fields": fields}
            if self.s.register_sonet_event:
                params["params"] = {"REGISTER_SONET_EVENT": "Y"}
            commands[f"n{i}"] = (d, command("crm.lead.add", params))
            sent[d.item.id] = fields
        created: dict[str, CrmLead] = {}
        for d, answer in await self.c.send(commands):
            new = CrmLead(str(answer), "P", sent[d.item.id])
            log.info(
                "lead %s: its CRM lead is closed, request %s is CRM lead %s",
                d.item.lead_id,
                d.item.event_id,
                new.id,
            )
            created[d.item.lead_id] = new
            self.c.decide(d, Status.DELIVERED, remote_id=new.id)
        return created

    # --- comments and fill-ins --------------------------------------------------------------

    async def _comment(self, plan: dict[str, list[Delivery]], targets: dict[str, CrmLead]) -> None:
        pairs = {d.item.id: (crm_id, d) for crm_id, ds in plan.items() for d in ds}
        done = await self.c.already_commented({k: v for k, v in pairs.items() if v[1].maybe_sent})
        if self.c.stop is not None:
            return
        commands: dict[str, str] = {}
        for crm_id, ds in plan.items():
            mine = [d for d in ds if self.c.open(d)]
            if targets[crm_id].in_work:
                # Closed leads are history: they get the comment, never new field values.
                fill = self._fill(targets[crm_id], mine)
                if fill:
                    commands[f"u{crm_id}"] = command(
                        "crm.lead.update", {"id": crm_id, "fields": fill}
                    )
            for d in mine:
                if d.item.id not in done:
                    text = event_comment(
                        d.lead, d.event, d.item.event_id, self.c.sink.tz, self.c.sink.seller_names
                    )
                    commands[f"m{d.item.id}"] = self.c.comment_command(crm_id, text)
        answers = await self.c.sink.run_batch(commands) if commands else {}
        for crm_id, ds in plan.items():
            update = answers.get(f"u{crm_id}")
            if isinstance(update, B24Error) and update.kind == "permanent":
                # The comment carries the same data; a refused value must not hold it back.
                log.warning("filling in CRM lead %s failed: %s", crm_id, update)
                update = None
            for d in ds:
                if not self.c.open(d):
                    continue
                if isinstance(update, B24Error):
                    self.c.fail(d, update)
                elif d.item.id in done:
                    self.c.decide(d, Status.DELIVERED, remote_id=done[d.item.id])
                else:
                    answer = answers[f"m{d.item.id}"]
                    if isinstance(answer, B24Error):
                        self.c.fail(d, answer)
                    else:
                        self.c.decide(d, Status.DELIVERED, remote_id=str(answer))

    def _fill(self, target: CrmLead, merges: list[Delivery]) -> dict[str, Any]:
        """What these merges bring that the CRM lead lacks, added up (one update a lead)."""
        values = target.values
        fill: dict[str, Any] = {}
        for d in merges:
            more = fill_fields(values, d.lead, d.event, self.s, region=self.c.sink.region)
            values = with_filled(values, more)
            for key, value in more.items():
                if key in ("PHONE", "EMAIL"):
                    fill[key] = [*fill.get(key, []), *value]
                else:
                    fill[key] = value
        if fill:
            target.values = values
        return fill
