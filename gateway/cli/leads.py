"""`leadgate leads list|show`: the store's leads, through the Store protocol (client role)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

from gateway.cli.store import with_store
from gateway.config import Settings
from gateway.conversations import CUSTOMER, Direction, Transcript
from gateway.identity import mask_email, mask_phone, mask_text
from gateway.leads_api import lead_json
from gateway.models import Channel, Lead, LeadStatus
from gateway.store.base import LeadQuery, Store
from gateway.textsafe import json_text, printable


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("leads", help="list or show leads in the store")
    actions = parser.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("list", help="newest leads first")
    ls.add_argument("--channel", choices=[c.value for c in Channel])
    ls.add_argument("--status", choices=[s.value for s in LeadStatus])
    ls.add_argument("--assigned-to")
    ls.add_argument("--since", type=datetime.fromisoformat, help="ISO time with offset")
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--json", action="store_true")
    show = actions.add_parser("show", help="one lead with its events")
    show.add_argument("lead_id")
    show.add_argument("--json", action="store_true")


def _line(lead: Lead, tz: ZoneInfo) -> str:
    c = lead.contact
    who = printable(c.name) or "—"
    # The terminal is a log too: masked unless --json is asked for explicitly.
    reach = ", ".join([mask_phone(p) for p in c.phones] + [mask_email(e) for e in c.emails])
    flags = " после часов" if lead.after_hours else ""
    return (
        f"{lead.id}  {lead.created_at.astimezone(tz):%Y-%m-%d %H:%M}  {lead.status.value:<4}  "
        f"{lead.channel.value:<8}  {lead.assigned_to or '(нет)':<12}  {who} {reach}{flags}"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    tz = ZoneInfo(settings.calendar.timezone)  # a seller reads Moscow time, not UTC
    if args.action == "list":
        channel = Channel(args.channel) if args.channel else None
        status = LeadStatus(args.status) if args.status else None
        query = LeadQuery(
            channel=channel,
            status=status,
            assigned_to=args.assigned_to,
            since=args.since,
            limit=args.limit,
        )
        leads = with_store(settings, lambda store: store.list_leads(query))
        if args.json:
            print(json_text([lead_json(lead) for lead in leads]))
        else:
            for lead in leads:
                print(_line(lead, tz))
            if not leads:
                print("(no leads)")
        return 0
    async def show(store: Store) -> tuple[Lead | None, Transcript]:
        return await store.get_lead(args.lead_id), await store.transcript(args.lead_id)

    found, transcript = with_store(settings, show)
    if found is None:
        print(f"leadgate: no lead {args.lead_id}", file=sys.stderr)
        return 1
    lead = found
    if args.json:
        print(json_text(lead_json(lead, transcript)))
        return 0
    print(_line(lead, tz))
    print(
        f"  source {lead.source_id}; SLA до {lead.sla_due_at:%Y-%m-%d %H:%M %Z}"
        + (f"; {printable(lead.after_hours_reason)}" if lead.after_hours_reason else "")
    )
    for ev in lead.events:
        matched = f" (по {ev.matched_on})" if ev.matched_on else ""
        first_line = (ev.text or "").splitlines()[0][:80] if ev.text else ""
        print(
            f"  - {ev.occurred_at.astimezone(tz):%Y-%m-%d %H:%M} {ev.channel.value} "
            # What customers write carries phones and addresses: masked like any log.
            f"{ev.outcome.value}{matched}: {printable(mask_text(first_line))}"
        )
    _print_transcript(transcript, tz)
    return 0


def _print_transcript(transcript: Transcript, tz: ZoneInfo) -> None:
    """The chat, in order: who wrote, what (masked like any log), and how a reply fared."""
    if not transcript.messages:
        return
    threads = {c.id: c for c in transcript.conversations}
    print("  переписка:")
    for m in transcript.messages:
        thread = threads.get(m.conversation_id)
        where = f"{thread.channel.value}/{thread.account}" if thread else "?"
        arrow = "←" if m.direction is Direction.IN else "→"
        who = "клиент" if m.author == CUSTOMER else m.author
        text = printable(mask_text(" ".join((m.text or "").split())))[:200]
        files = f" [+{len(m.attachments)} влож.]" if m.attachments else ""
        edited = " (изменено)" if m.edited_at else ""
        state = ""
        if m.direction is Direction.OUT:
            reason = f": {printable(m.status_reason)}" if m.status_reason else ""
            state = f"  [{m.status.value}{reason}]"
        print(
            f"  {arrow} {m.at.astimezone(tz):%Y-%m-%d %H:%M} {where} {who}: "
            f"{text}{files}{edited}{state}"
        )
