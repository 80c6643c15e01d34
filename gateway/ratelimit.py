"""Per-client token buckets for public endpoints, kept in Coordination.

With the embedded coordination the buckets live in this process (bounded: a flood of
distinct clients costs O(1) each and memory up to the bound); with a shared one every
replica takes from the same bucket, so running two gateways does not double a client's
allowance.
"""

from __future__ import annotations

from gateway.coordination import Coordination


class RateLimiter:
    def __init__(
        self,
        coordination: Coordination,
        requests: int,
        per_seconds: float,
        *,
        namespace: str = "ratelimit",
    ) -> None:
        self.coordination = coordination
        self.capacity = float(requests)
        self.rate = requests / per_seconds
        self.namespace = namespace

    async def hit(self, client: str) -> float:
        """Take one token; 0.0 if allowed, else the seconds until one is free."""
        return await self.coordination.take(
            f"{self.namespace}:{client}", capacity=self.capacity, rate=self.rate
        )
