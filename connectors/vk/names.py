"""Customers' names from users.get, cached, so the CRM shows «Иван Петров», not `vk:123`.

VK events carry user ids only. users.get (user_ids up to 1000, name_case "nom") answers
[{id, first_name, last_name, deactivated?, ...}]; a deleted or banned page answers
"DELETED" / "" and has no name worth showing. The cache is bounded in entries and in age
(people rename themselves); a failed lookup is not cached, the event just goes on unnamed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from connectors.vk.api import VkApi

MAX_IDS = 1000  # users.get user_ids maxItems


def display_name(user: Any) -> str | None:
    if not isinstance(user, dict) or user.get("deactivated"):
        return None
    first = user.get("first_name")
    last = user.get("last_name")
    parts = [p.strip() for p in (first, last) if isinstance(p, str) and p.strip()]
    name = " ".join(parts)
    return name[:200] or None


class NameCache:
    def __init__(
        self,
        api: VkApi | None,
        *,
        size: int = 10_000,
        ttl_seconds: float = 24 * 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.size = size
        self.ttl = ttl_seconds
        self._clock = clock
        self._known: OrderedDict[int, tuple[float, str | None]] = OrderedDict()

    def cached(self, user_id: int) -> tuple[bool, str | None]:
        entry = self._known.get(user_id)
        if entry is None:
            return False, None
        at, name = entry
        if self._clock() - at > self.ttl:
            del self._known[user_id]
            return False, None
        self._known.move_to_end(user_id)
        return True, name

    def _keep(self, user_id: int, name: str | None) -> None:
        self._known[user_id] = (self._clock(), name)
        self._known.move_to_end(user_id)
        while len(self._known) > self.size:
            self._known.popitem(last=False)

    async def names(self, user_ids: Iterable[int]) -> dict[int, str]:
        """Names of the users VK knows; raises VkError when it could not be asked."""
        wanted = [u for u in dict.fromkeys(user_ids) if u > 0]
        out: dict[int, str] = {}
        missing = []
        for user_id in wanted:
            hit, name = self.cached(user_id)
            if not hit:
                missing.append(user_id)
            elif name is not None:
                out[user_id] = name
        if not missing or self.api is None:
            return out
        for start in range(0, len(missing), MAX_IDS):
            chunk = missing[start : start + MAX_IDS]
            answer = await self.api.call(
                "users.get", {"user_ids": chunk, "name_case": "nom"}, retries=1
            )
            found: dict[int, str | None] = {}
            for user in answer if isinstance(answer, list) else []:
                if isinstance(user, dict) and isinstance(user.get("id"), int):
                    found[user["id"]] = display_name(user)
            for user_id in chunk:
                # An id VK did not return at all is remembered as nameless too: asking again
                # for every message of a deleted page would waste the token's budget.
                name = found.get(user_id)
                self._keep(user_id, name)
                if name is not None:
                    out[user_id] = name
        return out

    async def name(self, user_id: int) -> str | None:
        return (await self.names([user_id])).get(user_id)
