"""Per-client token buckets for public endpoints (in-process; one gateway per bucket set)."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    def __init__(self, requests: int, per_seconds: float, *, max_clients: int = 100_000) -> None:
        self.capacity = float(requests)
        self.rate = requests / per_seconds
        self.max_clients = max_clients
        self._buckets: dict[str, _Bucket] = {}

    def hit(self, client: str, now: float | None = None) -> float:
        """Take one token; 0.0 if allowed, else the seconds until one is free."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._prune(now)
            bucket = self._buckets[client] = _Bucket(self.capacity, now)
        else:
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _prune(self, now: float) -> None:
        # Buckets that have refilled completely carry no information: forget them.
        full = self.capacity / self.rate
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.at < full}
