"""Does an acknowledged event survive a power cut of the Redis host? Asked before the store
opens and again on every /readyz (and /ops refresh): CONFIG SET changes a running server.

[store] durability = "always" (the default): the gateway does not start unless Redis
appends and fsyncs every write before it answers (gateway.redisconn.check_durability);
the message names the setting. "relaxed": it starts anyway, and says so as a problem on
/readyz and /ops and as leadgate_store_durable{mode="relaxed"} 0.

A server switched to a weaker fsync while the gateway runs is a problem on /readyz and
leadgate_store_durable{mode="always"} 0 (alert LeadgateStoreNotDurable), not a refusal to
serve: answering every lead 503 would lose more than a second of writes on a power cut.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.config import StoreSettings
from gateway.i18n import N_
from gateway.metrics import Metrics
from gateway.redisconn import Durability, DurabilityMode, check_durability, connect
from gateway.texts import Text

log = logging.getLogger(__name__)

RELAXED = N_(
    "Redis не сохраняет каждую запись на диск до ответа ({detail}); так разрешено настройкой "
    '[store] durability = "relaxed": при отключении питания сервера Redis последние принятые '
    "события могут пропасть"
)
WEAKENED = N_(
    "Redis перестал сохранять каждую запись на диск до ответа ({detail}), а [store] "
    'durability = "always": верните appendfsync always (CONFIG SET appendfsync always и '
    "в redis.conf), иначе при отключении питания последние принятые события могут пропасть"
)
UNCHECKED = N_("не удалось проверить, сохраняет ли Redis каждую запись: {error}")


class RedisUnreachable(RuntimeError):
    """Redis did not answer at start: nothing can be stored, so the gateway does not start."""


class DurabilityWatch:
    """The startup check and the /readyz re-check for a Redis store (one small client)."""

    def __init__(self, store: StoreSettings, metrics: Metrics) -> None:
        self._store = store
        self.mode = DurabilityMode(store.durability)
        self._gauge = metrics.store_durable.labels(self.mode.value)
        self._client: aioredis.Redis | None = None

    async def start(self) -> Durability:
        """Check before anything is stored: raises RedisNotDurable (mode "always" and a
        server that does not fsync every write) or RedisUnreachable."""
        self._client = connect(self._store, name="leadgate-durability")
        try:
            found = await check_durability(self._client, self.mode)
        except BaseException as exc:
            self._gauge.set(0)
            await self.stop()
            if isinstance(exc, RedisError | OSError):
                # Operator-facing (stderr at start): the address helps, the URL's password
                # is not in redis-py's messages.
                raise RedisUnreachable(
                    f"Redis ([store] url or sentinels) did not answer: {exc}"
                ) from exc
            raise
        self._gauge.set(1 if found.durable else 0)
        if not found.durable:
            log.warning("%s", Text(RELAXED, detail=found.detail))
        return found

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def problem(self) -> str | None:
        """For /readyz: None while every write is fsynced before the answer."""
        if self._client is None:
            return None
        try:
            found = await check_durability(self._client, DurabilityMode.RELAXED)
        except (RedisError, OSError) as exc:
            # /readyz is open: the kind of failure, never the server's address.
            return Text(UNCHECKED, error=type(exc).__name__)
        self._gauge.set(1 if found.durable else 0)
        if found.durable:
            return None
        return Text(
            RELAXED if self.mode is DurabilityMode.RELAXED else WEAKENED, detail=found.detail
        )
