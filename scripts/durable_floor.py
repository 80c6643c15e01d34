#!/usr/bin/env python3
"""The durable floor: the least a server can do and still mean "stored" by its 2xx.

    python scripts/durable_floor.py PORT DB_PATH

One aiohttp process on 127.0.0.1:PORT. POST /v1/forms/{form} parses the JSON body (a 400
if it is not a JSON object), appends the body to one SQLite table (WAL,
synchronous=FULL) and answers 201 {"id": row id} only after the COMMIT that holds it
returned, i.e. after the fsync. Group commit as leadgate does it: every request that
arrives while a COMMIT runs waits for the next one, so one fsync acknowledges many, and
only the COMMIT goes to a thread. No validation, identity, assignment or outbox: what is
left is the cost of HTTP, JSON and a durable append. scripts/bench.py runs it beside
leadgate; leadgate's throughput is judged as a fraction of this one's.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from concurrent.futures import ThreadPoolExecutor

import orjson
from aiohttp import web

Pending = tuple[bytes, "asyncio.Future[int]"]


class Floor:
    def __init__(self, path: str) -> None:
        # The connection is used by the loop (INSERT) and the fsync thread (COMMIT), never
        # at once: the commit loop awaits the COMMIT before the next batch's INSERTs.
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS bodies (id INTEGER PRIMARY KEY, body BLOB)")
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.fsync = ThreadPoolExecutor(1, thread_name_prefix="fsync")
        self.task: asyncio.Task[None] | None = None

    async def commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                self.db.execute("BEGIN IMMEDIATE")
                ids = [
                    int(self.db.execute("INSERT INTO bodies (body) VALUES (?)", (body,)).lastrowid)  # type: ignore[arg-type]
                    for body, _ in batch
                ]
                await loop.run_in_executor(self.fsync, self.db.execute, "COMMIT")
            except Exception as exc:  # the batch fails, the server keeps serving
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                for _, done in batch:
                    done.set_exception(exc)
            else:
                for (_, done), row_id in zip(batch, ids, strict=True):
                    done.set_result(row_id)

    async def form(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            return web.json_response({"error": "not a JSON object"}, status=400)
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((body, done))
        row_id = await done
        return web.Response(
            status=201, body=orjson.dumps({"id": row_id}), content_type="application/json"
        )


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    floor = Floor(path)

    async def start(_: web.Application) -> None:
        floor.task = asyncio.get_running_loop().create_task(floor.commit_loop())

    app = web.Application()
    app.on_startup.append(start)
    app.router.add_post("/v1/forms/{form}", floor.form)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
