"""What the /ops page shows, gathered in one pass: a plain snapshot, rendered by ops_render
as HTML and served as JSON by /ops/data.

Everything with history comes from the store (intake per channel, the last event, the
outbox, open leads), so a restart or another replica shows the same picture; only the
connectors' own lines (webhooks since start, a mailbox's connection) are per process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from gateway import channels
from gateway.channels import StatusValue, connector_status
from gateway.keys import CONNECTORS, SETTINGS, STORE
from gateway.models import Channel, Outcome
from gateway.ops import readiness_detail
from gateway.store.base import INTAKE_BUCKET_SECONDS, OpenLeadStats, OutboxStats
from gateway.version import VERSION

HOUR = timedelta(hours=1)
BUCKET = timedelta(seconds=INTAKE_BUCKET_SECONDS)
HOURS_SHOWN = 24  # the day chart: hourly bars
RECENT_SHOWN = 36  # the recent chart: 5-minute bars, three hours

# channel -> the connector that serves it, built with the app (web.py).
CHANNEL_CONNECTORS: web.AppKey[dict[str, str]] = web.AppKey("ops_channel_connectors")
STARTED_AT: web.AppKey[datetime] = web.AppKey("ops_started_at")


@dataclass(frozen=True, slots=True)
class ChannelRow:
    channel: str
    label: str
    connector: str | None  # None: no connector serves it here (events may still exist)
    last_event_at: datetime | None
    outcomes: Mapping[str, int]  # over the day, by outcome
    hourly: Sequence[int]  # HOURS_SHOWN counts, oldest first
    recent: Sequence[int]  # RECENT_SHOWN counts, oldest first


@dataclass(frozen=True, slots=True)
class ConnectorRow:
    name: str
    problem: str | None
    status: Mapping[str, StatusValue]


@dataclass(frozen=True, slots=True)
class Snapshot:
    now: datetime
    tz: ZoneInfo
    version: str
    started_at: datetime
    serving: bool
    problems: Sequence[tuple[str, str]]
    hours: Sequence[datetime]  # start of each hourly bar
    recent: Sequence[datetime]  # start of each 5-minute bar
    channels: Sequence[ChannelRow]
    outbox: OutboxStats | None  # None when the store could not be read
    leads: OpenLeadStats | None
    sink: str
    connectors: Sequence[ConnectorRow] = field(default_factory=tuple)

    @property
    def status(self) -> str:
        if not self.serving:
            return "unavailable"
        return "degraded" if self.problems else "ok"

    @property
    def uptime_seconds(self) -> float:
        return max(0.0, (self.now - self.started_at).total_seconds())


def _floor(at: datetime, step: timedelta) -> datetime:
    seconds = int(at.timestamp() // step.total_seconds() * step.total_seconds())
    return datetime.fromtimestamp(seconds, UTC)


async def take(app: web.Application, now: datetime | None = None) -> Snapshot:
    now = now or datetime.now(UTC)
    settings = app[SETTINGS]
    tz = ZoneInfo(settings.calendar.timezone)
    serving, problems = await readiness_detail(app)
    hours = [_floor(now, HOUR) - HOUR * i for i in reversed(range(HOURS_SHOWN))]
    recent = [_floor(now, BUCKET) - BUCKET * i for i in reversed(range(RECENT_SHOWN))]
    by_channel = app.get(CHANNEL_CONNECTORS, {})
    rows: list[ChannelRow] = []
    outbox: OutboxStats | None = None
    leads: OpenLeadStats | None = None
    if serving:  # a store that cannot be read would only fail again here
        store = app[STORE]
        counts = await store.intake(hours[0])
        last = await store.last_event_at()
        outbox = await store.outbox_stats()
        leads = await store.open_lead_stats(now - timedelta(days=1), now)
        rows = _channel_rows(counts, last, by_channel, hours, recent)
    connectors = [
        ConnectorRow(c.name, c.readiness(), dict(connector_status(c))) for c in app[CONNECTORS]
    ]
    return Snapshot(
        now=now,
        tz=tz,
        version=VERSION,
        started_at=app.get(STARTED_AT, now),
        serving=serving,
        problems=problems,
        hours=hours,
        recent=recent,
        channels=rows,
        outbox=outbox,
        leads=leads,
        sink=settings.delivery.sink,
        connectors=connectors,
    )


def _channel_rows(
    counts: Sequence[Any],
    last: Mapping[str, datetime],
    by_channel: Mapping[str, str],
    hours: Sequence[datetime],
    recent: Sequence[datetime],
) -> list[ChannelRow]:
    hour_index = {h: i for i, h in enumerate(hours)}
    recent_index = {r: i for i, r in enumerate(recent)}
    shown = [c.value for c in Channel if c.value in by_channel or c.value in last]
    hourly = {ch: [0] * len(hours) for ch in shown}
    fine = {ch: [0] * len(recent) for ch in shown}
    outcomes: dict[str, dict[str, int]] = {ch: {} for ch in shown}
    for count in counts:
        if count.channel not in hourly:
            continue
        i = hour_index.get(_floor(count.bucket_start, HOUR))
        if i is not None:
            hourly[count.channel][i] += count.count
            day = outcomes[count.channel]
            day[count.outcome] = day.get(count.outcome, 0) + count.count
        j = recent_index.get(count.bucket_start)
        if j is not None:
            fine[count.channel][j] += count.count
    return [
        ChannelRow(
            channel=ch,
            label=channels.label(Channel(ch)),
            connector=by_channel.get(ch),
            last_event_at=last.get(ch),
            outcomes=outcomes[ch],
            hourly=hourly[ch],
            recent=fine[ch],
        )
        for ch in shown
    ]


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _value(value: StatusValue) -> str | int | None:
    return value.isoformat() if isinstance(value, datetime) else value


def as_json(snap: Snapshot) -> dict[str, Any]:
    """The snapshot for machines (`GET /ops/data`): times ISO 8601 UTC, texts in English."""
    outbox = snap.outbox
    return {
        "status": snap.status,
        "problems": [f"{source}: {problem}" for source, problem in snap.problems],
        "version": snap.version,
        "now": snap.now.isoformat(),
        "started_at": snap.started_at.isoformat(),
        "uptime_seconds": round(snap.uptime_seconds),
        "timezone": snap.tz.key,
        "intake": {
            "bucket_seconds": INTAKE_BUCKET_SECONDS,
            "hours": [h.isoformat() for h in snap.hours],
            "recent": [r.isoformat() for r in snap.recent],
            "channels": {
                row.channel: {
                    "connector": row.connector,
                    "last_event_at": _iso(row.last_event_at),
                    "day": {
                        o.value: row.outcomes.get(o.value, 0)
                        for o in Outcome
                        if o.value != Outcome.REPLAYED.value
                    },
                    "hourly": list(row.hourly),
                    "recent": list(row.recent),
                }
                for row in snap.channels
            },
        },
        "outbox": None
        if outbox is None
        else {
            "sink": snap.sink,
            "pending": outbox.pending,
            "dead": outbox.dead,
            "oldest_pending_age_seconds": round(
                (snap.now - outbox.oldest_pending_at).total_seconds()
            )
            if outbox.oldest_pending_at is not None
            else None,
        },
        "leads_last_day": None
        if snap.leads is None
        else {
            "new": snap.leads.new,
            "unassigned": snap.leads.unassigned,
            "overdue": snap.leads.overdue,
        },
        "connectors": {
            c.name: {
                "problem": c.problem,
                "status": {str(k): _value(v) for k, v in c.status.items()},
            }
            for c in snap.connectors
        },
    }
