#!/usr/bin/env python3
"""Bare aiohttp: read the body, parse the JSON, answer a JSON receipt. Nothing stored.

    python scripts/bare_aiohttp.py PORT

The ceiling of one aiohttp process on this machine, run by scripts/bench.py beside the
durable floor (scripts/durable_floor.py) and leadgate.
"""

from __future__ import annotations

import sys

import orjson
from aiohttp import web


async def form(request: web.Request) -> web.Response:
    data = orjson.loads(await request.read())
    if not isinstance(data, dict):
        return web.json_response({"error": "not a JSON object"}, status=400)
    body = orjson.dumps({"ok": True, "name": data.get("name")})
    return web.Response(status=201, body=body, content_type="application/json")


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    app = web.Application()
    app.router.add_post("/v1/forms/{form}", form)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
