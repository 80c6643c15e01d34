"""What ops watch: /healthz, /readyz, /metrics (Prometheus); the /ops page is in ops_page."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.keys import METRICS, PIPELINE, READINESS, STORE
from gateway.supervisor import mask_details as describe_text

ReadinessCheck = Callable[[], str | None] | Callable[[], Awaitable[str | None]]


def add_readiness_check(app: web.Application, name: str, check: ReadinessCheck) -> None:
    """Register a check: it returns a problem in words, or None when all is well. An async
    check (one that asks a server) runs on every /readyz: keep it to one quick request."""
    app[READINESS][name] = check


async def readiness_detail(app: web.Application) -> tuple[bool, list[tuple[str, str]]]:
    """(serving, [(source, problem)]). Only a store that cannot write stops serving; the rest
    degrade. No seller on duty, a sink that is failing: leads are still accepted and kept,
    so the load balancer must keep sending them here. Those show as problems, not as 503.

    A problem may be a gateway.texts.Text: its str is English (/readyz), the /ops page
    shows it in the reader's language.
    """
    problems: list[tuple[str, str]] = []
    try:
        await app[STORE].ping()
    except Exception as exc:
        return False, [("store", str(exc))]
    problems += [("assignment", p) for p in app[PIPELINE].roster.problems()]
    for name, check in app[READINESS].items():
        problem = check()
        if inspect.isawaitable(problem):
            problem = await problem
        if problem is not None:
            problems.append((name, problem))
    return True, problems


async def readiness(app: web.Application) -> tuple[bool, list[str]]:
    """(serving, problems as "source: problem" lines), as /readyz answers them.

    /readyz is open (load balancers cannot send tokens): its lines are masked like logs,
    and URL paths are cut (a webhook URL carries its secret in the path).
    """
    serving, detail = await readiness_detail(app)
    return serving, [describe_text(f"{source}: {problem}") for source, problem in detail]


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    serving, problems = await readiness(request.app)
    request.app[METRICS].ready.set(1 if serving and not problems else 0)
    status = "unavailable" if not serving else ("degraded" if problems else "ok")
    return web.Response(
        status=200 if serving else 503,
        body=orjson.dumps({"status": status, "problems": problems}),
        content_type="application/json",
    )


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup(app: web.Application) -> None:
    app[READINESS] = {}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
