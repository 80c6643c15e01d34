"""Wiring: the sink named in settings, the worker as an app resource, its readiness check."""

from __future__ import annotations

from collections.abc import Callable
from zoneinfo import ZoneInfo

from aiohttp import web

from gateway.channels import TaskSpec
from gateway.config import Settings
from gateway.coordination import Coordination
from gateway.delivery.bitrix24 import Bitrix24Sink
from gateway.delivery.local import LocalSink
from gateway.delivery.metrics import DeliveryMetrics
from gateway.delivery.sink import Sink
from gateway.delivery.webhook import WebhookSink
from gateway.delivery.worker import OutboxWorker
from gateway.keys import COORDINATION, METRICS, PIPELINE, SETTINGS, STORE, SUPERVISOR
from gateway.ops import add_readiness_check

WORKER = web.AppKey("outbox_worker", OutboxWorker)


def make_sink(
    settings: Settings,
    record: Callable[[str], None] | None = None,
    coordination: Coordination | None = None,
) -> Sink:
    delivery = settings.delivery
    if delivery.sink == "bitrix24":
        return Bitrix24Sink(
            delivery.bitrix24,
            sellers={s.id: s.crm_user_id for s in settings.sellers},
            tz=ZoneInfo(settings.calendar.timezone),
            seller_names={s.id: s.name for s in settings.sellers},
            sources=settings.sources,
            region=settings.phone_region,
            record=record,
            coordination=coordination,
        )
    if delivery.sink == "webhook":
        return WebhookSink(delivery.webhook, record=record)
    return LocalSink()


def setup(app: web.Application) -> None:
    """Register the worker as a supervised task (restarted if it dies). Not a singleton:
    every replica runs one, and the outbox's claims keep two from sending the same row."""
    settings = app[SETTINGS]
    metrics = DeliveryMetrics(app[METRICS].registry, settings.delivery.sink)
    coordination = app[COORDINATION]
    sink = make_sink(settings, metrics.request, coordination)
    worker = OutboxWorker(app[STORE], sink, settings.delivery, metrics, owner=coordination.owner)
    app[WORKER] = worker
    if not isinstance(sink, LocalSink):
        # The local sink's rows are born delivered: nothing to wake for.
        app[PIPELINE].on_commit(worker.stored)
    add_readiness_check(app, "delivery", worker.problem)
    app[SUPERVISOR].add(TaskSpec("outbox", worker.run, singleton=False))
