"""The aiohttp application: create_app(settings), middlewares for limits and errors."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestPayloadError

from gateway import channels, chat_service, leads_api, messages_api, ops, ops_page
from gateway.assign import Roster
from gateway.broadcast import Broadcast, InProcessBroadcast
from gateway.broadcast_redis import RedisBroadcast
from gateway.calendar import BusinessCalendar
from gateway.channels import ChannelSpec, ConnectorContext, TaskSpec
from gateway.chats import Chats
from gateway.config import Settings
from gateway.coordination import Coordination, InProcessCoordination
from gateway.coordination_redis import RedisCoordination
from gateway.delivery import service as delivery
from gateway.delivery.openlines import service as openlines
from gateway.errors import HTTP_CODES, ApiError, error_body, error_response
from gateway.http import networks
from gateway.keys import (
    BROADCAST,
    CONNECTORS,
    COORDINATION,
    METRICS,
    PIPELINE,
    SETTINGS,
    STORE,
    SUPERVISOR,
)
from gateway.metrics import Metrics
from gateway.ops_snapshot import CHANNEL_CONNECTORS
from gateway.pipeline import Pipeline
from gateway.quarantine import Releaser
from gateway.redact import register as register_secret
from gateway.redact import register_url
from gateway.redisconn import connect
from gateway.screen import Screen
from gateway.store.base import Store, StoreUnavailable
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SQLiteStore
from gateway.store_durability import DurabilityWatch
from gateway.supervisor import Supervisor

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# What the startup log says about each connector (built with the app, logged when it starts).
_STARTUP_LINES: web.AppKey[list[str]] = web.AppKey("connector_lines")


def make_store(settings: Settings) -> Store:
    outbox_delivered = settings.delivery.sink == "local"
    if settings.store.kind == "redis":
        _register_redis_url(settings)
        # Several replicas on one Redis: nothing of the store is kept in this process.
        s = settings.store
        # Acknowledged writes go through one connection of their own, so WAIT (with
        # min_replicas) counts the replicas that have exactly them.
        writer = connect(s, name="leadgate-writer", max_connections=1) if s.min_replicas else None
        return RedisStore(
            connect(s),
            prefix=s.prefix,
            outbox_delivered=outbox_delivered,
            writer=writer,
            min_replicas=s.min_replicas,
            replica_wait_seconds=s.replica_wait_seconds,
        )
    return SQLiteStore(
        settings.store.path,
        max_batch=settings.store.max_batch,
        outbox_delivered=outbox_delivered,
    )


def _register_redis_url(settings: Settings) -> None:
    # A password in the URL never reaches a log line (a connection error quotes it).
    register_url(settings.store.url.get_secret_value() if settings.store.url else None)


def make_coordination(settings: Settings) -> Coordination:
    """What this process agrees on with its peers: on the store's Redis (under its prefix)
    when [store] kind = "redis", else embedded (one process, exact)."""
    if settings.store.kind == "redis":
        return RedisCoordination(connect(settings.store), prefix=settings.store.prefix)
    return InProcessCoordination()


def make_broadcast(settings: Settings) -> Broadcast:
    """How this process tells its peers "something new for topic T": Redis pub/sub when
    [store] kind = "redis" (payloads are bytes: a client that does not decode), else
    in-process."""
    if settings.store.kind == "redis":
        client = connect(settings.store, decode=False, name="leadgate-broadcast")
        return RedisBroadcast(client, prefix=settings.store.prefix)
    return InProcessBroadcast()


def make_pipeline(settings: Settings, store: Store, metrics: Metrics) -> Pipeline:
    calendar = BusinessCalendar(settings.calendar)
    s = settings.screen
    return Pipeline(
        store=store,
        calendar=calendar,
        roster=Roster(settings.sellers, settings.assignment, calendar),
        screen=Screen(
            blocked_phones=s.blocked_phones,
            own_phones=s.own_phones,
            blocked_emails=s.blocked_emails,
            blocked_domains=s.blocked_domains,
            stop_words=s.stop_words,
            region=settings.phone_region,
        ),
        sources={ch.value: src for ch, src in settings.sources.items()},
        dedup_window=timedelta(days=settings.dedup.window_days),
        metrics=metrics,
        chats=Chats(settings.conversations, settings.calendar.timezone),
        mirror_chats=settings.openlines.configured,
    )


def _route_name(request: web.Request) -> str:
    # The route pattern, not the path: /v1/forms/{form_id} must not explode label cardinality.
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


@web.middleware
async def gateway_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Body limit, error mapping and latency in one layer: each middleware costs a few
    microseconds a request, and this is the hot path."""
    app = request.app
    start = time.perf_counter()
    # A WebSocket lives for minutes: as one "request" it would swamp the latency histogram.
    upgrade = request.headers.get(hdrs.UPGRADE)
    websocket = upgrade is not None and upgrade.lower() == "websocket"
    if websocket:
        app[METRICS].websockets.labels(_route_name(request)).inc()
    try:
        limit = app[SETTINGS].server.max_body_bytes
        # Refuse a declared oversize body before reading a byte of it; bodies without a
        # length (chunked) are cut off by client_max_size while being read.
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, "body_too_large", f"body larger than {limit} bytes")
        return await handler(request)
    except ApiError as err:
        app[METRICS].rejected(_route_name(request), err.code)
        return error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except RequestPayloadError as exc:
        # The body broke off or does not decode (bad gzip, short chunk): the client's fault,
        # and nothing was stored. Whoever still listens gets a 400, not a 500.
        unreadable = ApiError(400, "invalid_body", f"request body could not be read: {exc}")
        app[METRICS].rejected(_route_name(request), unreadable.code)
        return error_response(unreadable)
    except StoreUnavailable:
        log.exception("store unavailable")
        app[METRICS].rejected(_route_name(request), "store_unavailable")
        # 503, not 500: nothing was acknowledged, and the sender should retry.
        return web.Response(
            status=503,
            body=error_body("store_unavailable", "could not store the event; retry"),
            content_type="application/json",
            headers={"Retry-After": "5"},
        )
    except ConnectionResetError:
        # The client went away mid-upload (or was cut off by a read deadline): nothing was
        # stored and nobody listens. One debug line, not a traceback per dropped upload.
        log.debug("client gone during %s %s", request.method, _route_name(request))
        app[METRICS].rejected(_route_name(request), "client_gone")
        return web.Response(status=400)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, _route_name(request))
        app[METRICS].rejected(_route_name(request), "internal")
        return web.Response(
            status=500,
            body=error_body("internal", "internal error; it has been logged"),
            content_type="application/json",
        )
    finally:
        if websocket:
            app[METRICS].websockets.labels(_route_name(request)).dec()
        else:
            app[METRICS].observe_request(
                _route_name(request), request.method, time.perf_counter() - start
            )


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (no route, wrong method, body too large) as our JSON errors."""
    code = HTTP_CODES.get(exc.status, "http_error")
    request.app[METRICS].rejected(_route_name(request), code)
    detail = (
        exc.reason
        if exc.status != 413
        else f"body larger than {request.app[SETTINGS].server.max_body_bytes} bytes"
    )
    return web.Response(
        status=exc.status,
        body=error_body(code, detail),
        content_type="application/json",
        headers={k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")},
    )


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    coordination: Coordination | None = None,
    broadcast: Broadcast | None = None,
    specs: Sequence[ChannelSpec] | None = None,
) -> web.Application:
    """The app; `specs` defaults to the registered channel specs (tests pass their own).
    Tests pass one coordination or broadcast to several apps to play replicas."""
    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        middlewares=[gateway_middleware],
    )
    metrics = Metrics()
    if settings.store.kind == "redis":
        _register_redis_url(settings)  # the coordination, broadcast and watch use it too
    store = store or make_store(settings)
    coordination = coordination or make_coordination(settings)
    broadcast = broadcast or make_broadcast(settings)
    pipeline = make_pipeline(settings, store, metrics)
    app[SETTINGS] = settings
    app[METRICS] = metrics
    for tokens in (settings.orders.tokens, settings.admin.tokens):
        for token in tokens.values():
            register_secret(token.get_secret_value())
    app[STORE] = store
    app[PIPELINE] = pipeline
    app[COORDINATION] = coordination
    app[BROADCAST] = broadcast
    supervisor = app[SUPERVISOR] = Supervisor(coordination, metrics)
    ctx = ConnectorContext(
        settings=settings,
        pipeline=pipeline,
        metrics=metrics,
        coordination=coordination,
        broadcast=broadcast,
        trusted_proxies=networks(settings.server.trusted_proxies),
    )
    specs = channels.specs() if specs is None else specs
    pairs = [(spec, spec.build(ctx)) for spec in specs]
    built = [c for _, c in pairs if c is not None]
    app[CONNECTORS] = built
    # Which connector serves each channel: for /ops, and for releasing quarantined input.
    serving = {ch.value: c for spec, c in pairs if c is not None for ch in spec.channels}
    app[CHANNEL_CONNECTORS] = {ch: c.name for ch, c in serving.items()}
    leads_api.setup(app)
    messages_api.setup(app)
    ops.setup(app)
    watch = None
    if settings.store.kind == "redis":
        watch = DurabilityWatch(settings.store, metrics)
        ops.add_readiness_check(app, "store", watch.problem)
    else:
        metrics.store_durable.labels(settings.store.durability).set(1)  # synchronous=FULL
    ops_page.setup(app)
    off = [ch.value for spec, c in pairs if c is None for ch in spec.channels]
    app[_STARTUP_LINES] = lines = [
        f"channels on: {', '.join(sorted(serving)) or 'none'}; "
        f"off (not configured or not built yet): {', '.join(sorted(off)) or 'none'}",
        _describe_core(settings),
    ]
    for connector in built:
        routes = app.router.add_routes(connector.routes())
        tasks = connector.tasks()
        for task in tasks:
            supervisor.add(task)
        ops.add_readiness_check(app, connector.name, connector.readiness)
        lines.append(_describe(connector.name, routes, tasks))
    for name, check in ctx.readiness.items():
        ops.add_readiness_check(app, name, check)
    # cleanup_ctx runs in order at startup and in reverse at shutdown: on SIGTERM the tasks
    # are cancelled first, then the connectors shut down (in registry order), then the
    # coordination and last the store closes (after the events in flight are committed).
    # A Redis store's server is checked first: nothing opens on a server that would lose
    # acknowledged writes (gateway.store_durability).
    if watch is not None:
        app.cleanup_ctx.append(_durability_ctx(watch))
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_coordination_ctx)
    app.cleanup_ctx.append(_connectors_ctx)
    delivery.setup(app)  # the outbox worker: a supervised task like the connectors'
    # Quarantine entries people released go to the connector of their channel, or of the
    # name they were kept under (Meta keeps webhook bodies as "meta": one body, two channels).
    releasing = {**{c.name: c for c in built}, **serving}
    supervisor.add(Releaser(store, releasing).task())
    chat_service.setup(app)  # the inbox and message workers, likewise
    openlines.setup(app)  # Bitrix24 Open Lines, when [openlines] is configured
    ops.add_readiness_check(app, "tasks", supervisor.problem)
    app.cleanup_ctx.append(_supervisor_ctx)
    app.on_startup.append(_freeze_startup_objects)
    return app


def _durability_ctx(
    watch: DurabilityWatch,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def check(app: web.Application) -> AsyncIterator[None]:
        await watch.start()
        yield
        await watch.stop()

    return check


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    await store.open()
    yield
    await store.close()


async def _freeze_startup_objects(app: web.Application) -> None:
    # Settings, metadata tables (phonenumbers, holidays), routes: they live as long as the
    # process. Keeping them out of the collector's full scans took p99 at 32 connections
    # from ~50 ms to ~11 ms on the forms benchmark.
    gc.collect()
    gc.freeze()


async def _coordination_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[COORDINATION].open()
    await app[BROADCAST].open()
    yield
    await app[BROADCAST].close()
    await app[COORDINATION].close()


def _describe(name: str, routes: Sequence[web.AbstractRoute], tasks: Sequence[TaskSpec]) -> str:
    # Route patterns, never paths: a path parameter such as the CTI {token} is a secret, and
    # the pattern shows its name only.
    shown = ", ".join(f"{r.method} {r.resource.canonical}" for r in routes if r.resource)
    jobs = ", ".join(f"{t.name} (singleton)" if t.singleton else t.name for t in tasks)
    return f"connector {name}: routes {shown or 'none'}; tasks {jobs or 'none'}"


def _describe_core(settings: Settings) -> str:
    admin = f"{len(settings.admin.tokens)} admin token(s)"
    ops_access = admin + (
        f" or {len(settings.ops.allowed_networks)} allowed network(s)"
        if settings.ops.allowed_networks
        else ""
    )
    return (
        f"endpoints: GET /v1/leads, /v1/leads/{{id}} ({admin}); "
        f"GET /ops ({ops_access}); GET /metrics, /healthz, /readyz (open); "
        f"delivery: {settings.delivery.sink}"
    )


async def _connectors_ctx(app: web.Application) -> AsyncIterator[None]:
    for line in app[_STARTUP_LINES]:
        log.info("%s", line)
    yield
    for connector in app[CONNECTORS]:
        try:
            await connector.shutdown()
        except Exception:
            log.exception("connector %s: shutdown failed", connector.name)


async def _supervisor_ctx(app: web.Application) -> AsyncIterator[None]:
    supervisor = app[SUPERVISOR]
    supervisor.start()
    yield
    await supervisor.stop()
