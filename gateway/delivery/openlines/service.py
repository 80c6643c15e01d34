"""Wiring: the tokens, the client, the routes, the inbox handler, the worker, readiness."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from gateway.channels import TaskSpec
from gateway.config import Settings
from gateway.coordination import Coordination
from gateway.delivery.openlines.answers import INBOX, AnswerHandler
from gateway.delivery.openlines.client import AppClient
from gateway.delivery.openlines.intake import EventIntake
from gateway.delivery.openlines.links import CRM_SINK, CrmLinks
from gateway.delivery.openlines.metrics import OpenLinesMetrics
from gateway.delivery.openlines.mirror import MirrorWorker
from gateway.delivery.openlines.oauth import OAuthClient
from gateway.delivery.openlines.routes import OpenLinesRoutes
from gateway.delivery.openlines.tokens import AppState, Checkpoints, TokenKeeper
from gateway.keys import COORDINATION, METRICS, PIPELINE, SETTINGS, STORE, SUPERVISOR
from gateway.ops import add_readiness_check
from gateway.redact import register

KEEPER = web.AppKey("openlines_keeper", TokenKeeper)
CLIENT = web.AppKey("openlines_client", AppClient)
MIRROR_WORKER = web.AppKey("openlines_worker", MirrorWorker)


def build(
    settings: Settings,
    checkpoints: Checkpoints,
    coordination: Coordination,
    metrics: OpenLinesMetrics | None = None,
    *,
    assume_busy: bool | None = None,
) -> tuple[TokenKeeper, AppClient]:
    """The token keeper and the REST client for the configured application (the app and
    the CLI build the same pair). `assume_busy`: start with the portal's bucket spent (the
    CRM delivery's setting by default)."""
    ol = settings.openlines
    assert ol.client_id is not None and ol.client_secret is not None
    secret = ol.client_secret.get_secret_value()
    register(secret)
    if ol.application_token is not None:
        register(ol.application_token.get_secret_value())
    oauth = OAuthClient(ol.client_id, secret, timeout=ol.timeout_seconds)
    keeper = TokenKeeper(
        ol, checkpoints, coordination, oauth, record=metrics.refresh if metrics else None
    )
    crm = settings.delivery.bitrix24
    client = AppClient(
        ol,
        keeper,
        coordination,
        burst=crm.burst,
        rate=crm.rate,
        full=crm.assume_busy_on_start if assume_busy is None else assume_busy,
        operation_wait=crm.operation_limit_wait_seconds,
        record=metrics.request if metrics else None,
    )
    return keeper, client


def setup(app: web.Application) -> None:
    """Mount Open Lines when [openlines] names an application; nothing otherwise."""
    settings = app[SETTINGS]
    if not settings.openlines.configured:
        return
    store, pipeline = app[STORE], app[PIPELINE]
    coordination = app[COORDINATION]
    metrics = OpenLinesMetrics(app[METRICS].registry)
    keeper, client = build(settings, store, coordination, metrics)
    links = CrmLinks(store, client, settings.openlines, enabled=settings.delivery.sink == CRM_SINK)
    worker = MirrorWorker(
        store,
        client,
        keeper,
        links,
        settings.openlines,
        settings.delivery,
        metrics,
        owner=coordination.owner,
    )
    app[KEEPER], app[CLIENT], app[MIRROR_WORKER] = keeper, client, worker
    metrics.halted.set_function(lambda: 0.0 if keeper.state is AppState.READY else 1.0)
    pipeline.inbox.register(INBOX, AnswerHandler(store, pipeline.chats, settings.sellers, metrics))
    # A seller's answer queued, or a customer's message kept to copy, wakes the worker.
    pipeline.chats.on_queue(worker.wake)
    intake = EventIntake(pipeline.inbox, store, keeper, settings.openlines.line)
    routes = OpenLinesRoutes(
        settings.openlines, keeper, client, metrics, on_event=intake, on_install=worker.wake
    )
    app.router.add_routes(routes.routes())
    add_readiness_check(app, "openlines", lambda: keeper.problem() or worker.problem())
    supervisor = app[SUPERVISOR]
    supervisor.add(TaskSpec("openlines-tokens", keeper.watch, singleton=False))
    supervisor.add(TaskSpec("openlines", worker.run, singleton=False))
    app.cleanup_ctx.append(_close_ctx)


async def _close_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[CLIENT].close()
    await app[KEEPER].oauth.close()
