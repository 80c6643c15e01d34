"""One Bitrix24Sink.deliver() call: the look-ups, duplicates, creates and comments it takes.

See gateway.delivery.bitrix24 for the order of the steps and why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.delivery.b24client import B24Error, command
from gateway.delivery.b24mapping import event_comment, lead_fields, marker
from gateway.delivery.b24merge import CrmLead, Merges
from gateway.delivery.sink import Delivery, Result, Status
from gateway.models import LeadStatus
from gateway.store.base import OutboxKind, OutboxState

if TYPE_CHECKING:
    from gateway.delivery.bitrix24 import Bitrix24Sink

log = logging.getLogger(__name__)

_KIND_STATUS = {
    "halt": Status.HALT,
    "throttle": Status.THROTTLE,
    "retry": Status.RETRY,
    "permanent": Status.DEAD,
}


@dataclass(slots=True)
class _Target:
    """What a new lead becomes after the duplicate search."""

    contact_id: int | None = None
    company_id: int | None = None
    open_lead_id: str | None = None  # attach the request to this lead instead of creating


class Cycle:
    """The state of one deliver() call."""

    def __init__(self, sink: Bitrix24Sink, batch: Sequence[Delivery]) -> None:
        self.sink = sink
        self.s = sink.settings
        self.batch = list(batch)
        self.decided: dict[int, Result] = {}
        self.remote: dict[str, str] = {}  # lead id -> CRM lead id
        self.fresh: dict[str, CrmLead] = {}  # CRM leads this call created, as sent
        self.stop: B24Error | None = None  # a throttle or halt: no more requests this call

    def results(self) -> list[Result]:
        out = []
        for d in self.batch:
            result = self.decided.get(d.item.id)
            if result is None:
                err = self.stop or B24Error("retry", "UNDECIDED", "no outcome")
                result = self._from_error(d, err)
            out.append(result)
        return out

    def open(self, d: Delivery) -> bool:
        return d.item.id not in self.decided

    def decide(self, d: Delivery, status: Status, **kw: Any) -> None:
        self.decided[d.item.id] = Result(d.item.id, status, **kw)

    def _from_error(self, d: Delivery, err: B24Error) -> Result:
        return Result(
            d.item.id, _KIND_STATUS[err.kind], error=str(err), retry_after=err.retry_after
        )

    def fail(self, d: Delivery, err: B24Error) -> None:
        self.decided[d.item.id] = self._from_error(d, err)
        if err.kind in ("halt", "throttle") and self.stop is None:
            self.stop = err

    async def run(self) -> None:
        creates: list[Delivery] = []
        merges: list[Delivery] = []
        for d in self.batch:
            if d.lead_remote_id is not None:
                self.remote[d.item.lead_id] = d.lead_remote_id
            if d.lead.status is LeadStatus.JUNK and not self.s.send_junk:
                self.decide(d, Status.SKIPPED, error="JUNK: not sent (bitrix24.send_junk)")
            elif d.item.kind is OutboxKind.CREATED:
                if d.lead_remote_id is not None:
                    self.decide(d, Status.DELIVERED, remote_id=d.lead_remote_id)
                else:
                    creates.append(d)
            else:
                merges.append(d)
        creating = {d.item.lead_id for d in creates}
        await self._find_by_origin(creates, merges, creating)
        if self.stop is None:
            await self._create([d for d in creates if self.open(d)])
        if self.stop is None:
            await Merges(self).run([d for d in merges if self.open(d)], creating)

    # --- 1. crash safety: is the lead already there? ------------------------------------

    async def _find_by_origin(
        self, creates: list[Delivery], merges: list[Delivery], creating: set[str]
    ) -> None:
        wanted: dict[str, list[Delivery]] = {}
        for d in creates:
            if d.maybe_sent:
                wanted.setdefault(d.item.lead_id, []).append(d)
        for d in merges:
            lead_id = d.item.lead_id
            if lead_id in self.remote or lead_id in creating:
                continue
            if d.lead_state not in (OutboxState.PENDING, OutboxState.DEAD):
                # Delivered without a link here (another sink, a purge): the CRM may know it.
                wanted.setdefault(lead_id, []).append(d)
        if not wanted:
            return
        keys = {f"o{i}": lead_id for i, lead_id in enumerate(wanted)}
        commands = {
            key: command(
                "crm.lead.list",
                {
                    "filter": {"ORIGINATOR_ID": self.s.originator_id, "ORIGIN_ID": lead_id},
                    "select": ["ID"],
                    "order": {"ID": "ASC"},
                },
            )
            for key, lead_id in keys.items()
        }
        answers = await self.sink.run_batch(commands)
        for key, lead_id in keys.items():
            answer = answers[key]
            if isinstance(answer, B24Error):
                for d in wanted[lead_id]:
                    self.fail(d, answer)
                continue
            found = [str(row["ID"]) for row in answer or [] if isinstance(row, dict)]
            if found:
                # Oldest first: should a duplicate ever exist, everyone agrees on the first.
                self.remote[lead_id] = found[0]
                log.info("lead %s was already in Bitrix24 as %s", lead_id, found[0])
                for d in wanted[lead_id]:
                    if d.item.kind is OutboxKind.CREATED:
                        self.decide(d, Status.DELIVERED, remote_id=found[0])

    # --- 2. duplicates in the CRM from before leadgate -------------------------------------

    async def _targets(self, creates: list[Delivery]) -> dict[int, _Target]:
        targets: dict[int, _Target] = {d.item.id: _Target() for d in creates}
        if not self.s.find_duplicates or not creates:
            return targets
        commands: dict[str, str] = {}
        owner: dict[str, Delivery] = {}
        for i, d in enumerate(creates):
            for kind, values in (
                ("PHONE", d.lead.contact.phones),
                ("EMAIL", d.lead.contact.emails),
            ):
                if values:
                    key = f"d{i}{kind[0].lower()}"
                    commands[key] = command(
                        "crm.duplicate.findbycomm", {"type": kind, "values": list(values[:20])}
                    )
                    owner[key] = d
        found: dict[int, dict[str, list[int]]] = {}
        answers = await self.sink.run_batch(commands)
        for key, answer in answers.items():
            d = owner[key]
            if isinstance(answer, B24Error):
                if answer.kind == "permanent":
                    log.warning("duplicate search failed, creating anyway: %s", answer)
                else:
                    self.fail(d, answer)
                continue
            if isinstance(answer, dict):
                mine = found.setdefault(d.item.id, {})
                for entity, ids in answer.items():
                    mine.setdefault(entity, []).extend(int(x) for x in ids or [])
        for item_id, by_entity in found.items():
            if contacts := by_entity.get("CONTACT"):
                targets[item_id].contact_id = max(contacts)
            if companies := by_entity.get("COMPANY"):
                targets[item_id].company_id = max(companies)
        if self.stop is None and self.s.attach_to_open_lead:
            await self._open_leads(creates, found, targets)
        return targets

    async def _open_leads(
        self,
        creates: list[Delivery],
        found: dict[int, dict[str, list[int]]],
        targets: dict[int, _Target],
    ) -> None:
        """Which of the person's CRM leads is still being worked (semantic P)."""
        commands = {
            f"s{d.item.id}": command(
                "crm.lead.list",
                {
                    "filter": {
                        "@ID": sorted(set(found[d.item.id]["LEAD"])),
                        "STATUS_SEMANTIC_ID": "P",
                    },
                    "select": ["ID"],
                    "order": {"ID": "DESC"},
                },
            )
            for d in creates
            if self.open(d) and found.get(d.item.id, {}).get("LEAD")
        }
        if not commands:
            return
        answers = await self.sink.run_batch(commands)
        for d in creates:
            answer = answers.get(f"s{d.item.id}")
            if isinstance(answer, B24Error):
                self.fail(d, answer)
            elif answer:
                targets[d.item.id].open_lead_id = str(answer[0]["ID"])

    # --- 3. new leads ----------------------------------------------------------------------

    async def _create(self, creates: list[Delivery]) -> None:
        if not creates:
            return
        targets = await self._targets(creates)
        if self.stop is not None:
            return
        creates = [d for d in creates if self.open(d)]
        attach = [d for d in creates if targets[d.item.id].open_lead_id is not None]
        if attach:
            await self._attach(attach, targets)
        commands: dict[str, tuple[Delivery, str]] = {}
        sent: dict[int, dict[str, Any]] = {}
        for i, d in enumerate(creates):
            target = targets[d.item.id]
            if target.open_lead_id is not None:
                continue
            fields = lead_fields(
                d.lead,
                d.event,
                self.s,
                assigned_by=self.sink.sellers.get(d.lead.assigned_to or ""),
                tz=self.sink.tz,
            )
            if target.contact_id is not None:
                fields["CONTACT_ID"] = target.contact_id
            if target.company_id is not None:
                fields["COMPANY_ID"] = target.company_id
            params: dict[str, Any] = {"fields": fields}
            if self.s.register_sonet_event:
                params["params"] = {"REGISTER_SONET_EVENT": "Y"}
            commands[f"c{i}"] = (d, command("crm.lead.add", params))
            sent[d.item.id] = fields
        for d, answer in await self.send(commands):
            self.remote[d.item.lead_id] = str(answer)
            fields = sent[d.item.id]
            junk = fields["STATUS_ID"] == self.s.junk_status_id
            self.fresh[str(answer)] = CrmLead(str(answer), "F" if junk else "P", fields)
            self.decide(d, Status.DELIVERED, remote_id=str(answer))

    async def _attach(self, attach: list[Delivery], targets: dict[int, _Target]) -> None:
        """The person's open CRM lead gets this request as a comment, and becomes our lead."""
        pairs = {d.item.id: (targets[d.item.id].open_lead_id or "", d) for d in attach}
        done = await self.already_commented({k: v for k, v in pairs.items() if v[1].maybe_sent})
        commands: dict[str, tuple[Delivery, str]] = {}
        for item_id, (crm_id, d) in pairs.items():
            if not self.open(d):
                continue
            if item_id in done:
                self.remote[d.item.lead_id] = crm_id
                self.decide(d, Status.DELIVERED, remote_id=crm_id)
                continue
            text = "Новое обращение (лид уже в работе)\n" + event_comment(
                d.lead, d.event, d.item.event_id, self.sink.tz, self.sink.seller_names
            )
            commands[f"a{item_id}"] = (d, self.comment_command(crm_id, text))
        for d, _answer in await self.send(commands):
            crm_id = pairs[d.item.id][0]
            self.remote[d.item.lead_id] = crm_id
            self.decide(d, Status.DELIVERED, remote_id=crm_id)

    # --- 4. merged events: gateway.delivery.b24merge; what the steps share ----------------

    async def send(self, commands: dict[str, tuple[Delivery, str]]) -> list[tuple[Delivery, Any]]:
        """Run one batch of per-delivery commands; fail the deliveries whose command failed
        and return the others with their answers."""
        if not commands or self.stop is not None:
            return []
        answers = await self.sink.run_batch({k: cmd for k, (_, cmd) in commands.items()})
        done: list[tuple[Delivery, Any]] = []
        for key, (d, _) in commands.items():
            answer = answers[key]
            if isinstance(answer, B24Error):
                self.fail(d, answer)
            else:
                done.append((d, answer))
        return done

    def comment_command(self, crm_id: str, text: str) -> str:
        return command(
            "crm.timeline.comment.add",
            {"fields": {"ENTITY_ID": crm_id, "ENTITY_TYPE": "lead", "COMMENT": text}},
        )

    async def already_commented(self, pairs: Mapping[int, tuple[str, Delivery]]) -> dict[int, str]:
        """item id -> comment id, for comments an earlier attempt already left (by marker).
        Only the newest 50 comments of a lead are read: ours are recent."""
        if not pairs or self.stop is not None:
            return {}
        commands = {
            f"k{item_id}": command(
                "crm.timeline.comment.list",
                {
                    "filter": {"ENTITY_ID": crm_id, "ENTITY_TYPE": "lead"},
                    "select": ["ID", "COMMENT"],
                    "order": {"ID": "DESC"},
                },
            )
            for item_id, (crm_id, _) in pairs.items()
        }
        answers = await self.sink.run_batch(commands)
        found: dict[int, str] = {}
        for item_id, (_, d) in pairs.items():
            answer = answers[f"k{item_id}"]
            if isinstance(answer, B24Error):
                self.fail(d, answer)
                continue
            tag = marker(d.item.event_id)
            for row in answer or []:
                if isinstance(row, dict) and tag in str(row.get("COMMENT", "")):
                    found[item_id] = str(row["ID"])
                    break
        return found
