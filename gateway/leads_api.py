"""GET /v1/leads and /v1/leads/{id}: the admin's read API over the store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from gateway.conversations import Transcript
from gateway.errors import ApiError
from gateway.http import require_token
from gateway.keys import SETTINGS, STORE
from gateway.models import Channel, Lead, LeadStatus
from gateway.store.base import LeadQuery

MAX_LIMIT = 500


def lead_json(lead: Lead, transcript: Transcript | None = None) -> dict[str, Any]:
    """A lead as JSON; with a transcript (one lead's view), its conversations and messages."""
    body = lead.model_dump(mode="json")
    if transcript is not None:
        body["conversations"] = [c.model_dump(mode="json") for c in transcript.conversations]
        body["messages"] = [m.model_dump(mode="json") for m in transcript.messages]
    return body


def parse_query(params: dict[str, str]) -> LeadQuery:
    fields: dict[str, str] = {}
    channel = status = since = None
    limit = 50
    if (raw := params.get("channel")) is not None:
        try:
            channel = Channel(raw)
        except ValueError:
            fields["channel"] = f"one of {', '.join(c.value for c in Channel)}"
    if (raw := params.get("status")) is not None:
        try:
            status = LeadStatus(raw.upper())
        except ValueError:
            fields["status"] = f"one of {', '.join(s.value for s in LeadStatus)}"
    if (raw := params.get("since")) is not None:
        try:
            since = datetime.fromisoformat(raw)
            if since.tzinfo is None:
                raise ValueError
        except ValueError:
            fields["since"] = "an ISO 8601 time with its offset, e.g. 2026-01-12T10:00:00+03:00"
    if (raw := params.get("limit")) is not None:
        if raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_LIMIT:
            limit = int(raw)
        else:
            fields["limit"] = f"a whole number from 1 to {MAX_LIMIT}"
    unknown = set(params) - {"channel", "status", "assigned_to", "since", "limit", "cursor"}
    for name in sorted(unknown):
        fields[name] = "unknown parameter"
    if fields:
        raise ApiError(422, "invalid_query", "the query has invalid parameters", fields)
    return LeadQuery(
        channel=channel,
        status=status,
        assigned_to=params.get("assigned_to"),
        since=since,
        before_id=params.get("cursor"),
        limit=limit,
    )


async def list_leads(request: web.Request) -> web.Response:
    require_token(request, request.app[SETTINGS].admin.tokens, "admin")
    query = parse_query(dict(request.query))
    leads = await request.app[STORE].list_leads(query)
    body: dict[str, Any] = {"leads": [lead_json(lead) for lead in leads]}
    # A full page may have more behind it; the cursor is the last id seen.
    body["next_cursor"] = leads[-1].id if len(leads) == query.limit else None
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def get_lead(request: web.Request) -> web.Response:
    require_token(request, request.app[SETTINGS].admin.tokens, "admin")
    store = request.app[STORE]
    lead = await store.get_lead(request.match_info["lead_id"])
    if lead is None:
        raise ApiError(404, "not_found", "no lead with that id")
    body = lead_json(lead, await store.transcript(lead.id))
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/leads", list_leads)
    app.router.add_get("/v1/leads/{lead_id}", get_lead)
