"""The store as the CLI sees it: the Store protocol, opened beside a running gateway.

The CLI never reads the database itself: it asks a store in its client role, which takes
no lock (the running server holds the file's single-writer lock), reads alongside the
server, and makes each rare write (`outbox retry`) one short transaction. On Redis every
process is a peer: the CLI opens the same store the replicas use.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from gateway.client_settings import ClientSettings
from gateway.config import Settings, store_name
from gateway.store.base import Store, StoreUnavailable
from gateway.store.sqlite import SQLiteStore, StoreRole

T = TypeVar("T")
# The read-only commands load ClientSettings (no secrets needed); both carry `store`.
AnySettings = ClientSettings | Settings


def make_client_store(settings: AnySettings) -> Store:
    if settings.store.kind == "redis":
        from gateway.redisconn import connect
        from gateway.store.redis import RedisStore

        return RedisStore(connect(settings.store), prefix=settings.store.prefix)
    path = settings.store.path
    if not path.exists():
        raise SystemExit(f"leadgate: no store at {path} (has the gateway run here yet?)")
    return SQLiteStore(path, role=StoreRole.CLIENT)


@asynccontextmanager
async def opened(settings: AnySettings) -> AsyncIterator[Store]:
    store = make_client_store(settings)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def with_store(settings: AnySettings, work: Callable[[Store], Awaitable[T]]) -> T:
    """Run `work` on an opened client store; a store that cannot serve exits with 1."""

    async def main() -> T:
        async with opened(settings) as store:
            return await work(store)

    try:
        return asyncio.run(main())
    except StoreUnavailable as exc:
        print(f"leadgate: {store_name(settings.store)}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
