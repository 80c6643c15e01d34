"""`leadgate store copy --from sqlite:PATH --to redis://HOST:PORT/DB`: moving an
installation from the embedded store to Redis (gateway.store.redis_copy), verifiably: the
counts and a checksum of both sides, read through the Store protocol, are printed and must
agree."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis

from gateway.client_settings import ClientSettings
from gateway.redact import redact, register_url
from gateway.store.base import StoreUnavailable
from gateway.store.fingerprint import fingerprint
from gateway.store.redis import RedisStore
from gateway.store.redis_copy import CopyRefused, copy_sqlite_to_redis, lock_file
from gateway.store.sqlite import SQLiteStore, StoreRole


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("store", help="move the store to another backend")
    actions = parser.add_subparsers(dest="action", required=True)
    copy = actions.add_parser(
        "copy",
        help="copy a SQLite store into an empty Redis prefix (stop the gateway first)",
    )
    copy.add_argument("--from", dest="source", required=True, metavar="sqlite:PATH")
    copy.add_argument("--to", dest="target", required=True, metavar="redis://HOST:PORT/DB")
    copy.add_argument(
        "--prefix", help="key prefix in Redis (default: [store] prefix of the config)"
    )


def run(args: argparse.Namespace, settings: ClientSettings) -> int:
    if not args.source.startswith("sqlite:"):
        print("leadgate: --from must be sqlite:PATH", file=sys.stderr)
        return 2
    if not args.target.startswith(("redis://", "rediss://", "unix://")):
        print("leadgate: --to must be a redis:// URL", file=sys.stderr)
        return 2
    register_url(args.target)
    path = Path(args.source.removeprefix("sqlite:"))
    prefix = args.prefix or settings.store.prefix
    try:
        lock = lock_file(path)
    except CopyRefused as exc:
        print(f"leadgate: {exc}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(_copy(path, args.target, prefix, ZoneInfo(settings.calendar.timezone)))
    except (CopyRefused, StoreUnavailable) as exc:
        print(f"leadgate: {redact(str(exc))}", file=sys.stderr)
        return 1
    finally:
        lock.close()


async def _copy(path: Path, url: str, prefix: str, tz: ZoneInfo) -> int:
    # Opened first: a file of an older version is brought to this version's tables.
    source = SQLiteStore(path, role=StoreRole.CLIENT)
    await source.open()
    try:
        client = aioredis.Redis.from_url(url, decode_responses=True)
        try:
            copied, sinks = await copy_sqlite_to_redis(path, client, prefix, tz)
        finally:
            await client.aclose()
        print("copied: " + ", ".join(f"{kind} {n}" for kind, n in copied.items()))
        target = RedisStore(aioredis.Redis.from_url(url, decode_responses=True), prefix=prefix)
        await target.open()
        try:
            before = await fingerprint(source, sinks)
            after = await fingerprint(target, sinks)
        finally:
            await target.close()
    finally:
        await source.close()
    print(f"sqlite: {before.line()}")
    print(f"redis:  {after.line()}")
    if before != after:
        print("leadgate: the copy differs from the source", file=sys.stderr)
        return 1
    print("the copy matches its source")
    return 0
