"""What ops watch: /healthz, /readyz, /metrics (Prometheus) and a small /ops page."""

from __future__ import annotations

import html
from collections.abc import Callable

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.keys import METRICS, PIPELINE, READINESS, STORE
from gateway.redact import redact

ReadinessCheck = Callable[[], str | None]


def add_readiness_check(app: web.Application, name: str, check: ReadinessCheck) -> None:
    """Register a check: it returns a problem in words, or None when all is well."""
    app[READINESS][name] = check


async def readiness(app: web.Application) -> tuple[bool, list[str]]:
    """(serving, problems). Only a store that cannot write stops serving; the rest degrade.

    No seller on duty, a sink that is failing: leads are still accepted and kept, so the
    load balancer must keep sending them here. Those show as problems, not as 503.
    """
    problems: list[str] = []
    try:
        await app[STORE].ping()
    except Exception as exc:
        return False, [redact(f"store: {exc}")]
    problems += [f"assignment: {p}" for p in app[PIPELINE].roster.problems()]
    for name, check in app[READINESS].items():
        if (problem := check()) is not None:
            problems.append(f"{name}: {problem}")
    # Both pages answer without a token: a problem that quotes a CRM's answer must not
    # carry a piece of a secret (gateway.redact), whatever produced it.
    return True, [redact(p) for p in problems]


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


def _samples(request: web.Request, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for family in request.app[METRICS].registry.collect():
        for sample in family.samples:
            if sample.name == name:
                out.append((dict(sample.labels), sample.value))
    return out


def _by_labels(sample: tuple[dict[str, str], float]) -> str:
    return str(sorted(sample[0].items()))


async def ops_page(request: web.Request) -> web.Response:
    serving, problems = await readiness(request.app)
    rows = (
        "".join(
            f"<tr><td>{html.escape(lbl.get('channel', ''))}</td>"
            f"<td>{html.escape(lbl.get('outcome', ''))}</td><td>{int(v)}</td></tr>"
            for lbl, v in sorted(_samples(request, "leadgate_events_total"), key=_by_labels)
        )
        or "<tr><td colspan=3>пока ничего</td></tr>"
    )
    rejected = (
        "".join(
            f"<tr><td>{html.escape(lbl.get('route', ''))}</td>"
            f"<td>{html.escape(lbl.get('reason', ''))}</td><td>{int(v)}</td></tr>"
            for lbl, v in sorted(_samples(request, "leadgate_rejections_total"), key=_by_labels)
        )
        or "<tr><td colspan=3>нет</td></tr>"
    )
    state = "недоступен" if not serving else ("с проблемами" if problems else "работает")
    problem_list = "".join(f"<li>{html.escape(p)}</li>" for p in problems)
    page = f"""<!doctype html><html lang="ru"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="10"><title>leadgate — состояние</title>
<style>body{{font:15px system-ui;margin:2em}}td,th{{padding:.2em 1em;text-align:left}}</style>
</head><body><h1>leadgate: {state}</h1><ul>{problem_list}</ul>
<h2>Обращения с момента запуска</h2><table><tr><th>канал</th><th>итог</th><th>число</th></tr>
{rows}</table>
<h2>Отклонённые запросы</h2><table><tr><th>адрес</th><th>причина</th><th>число</th></tr>
{rejected}</table><p><a href="/metrics">/metrics</a> · <a href="/readyz">/readyz</a></p>
</body></html>"""
    return web.Response(text=page, content_type="text/html")


def setup(app: web.Application) -> None:
    app[READINESS] = {}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/ops", ops_page)
