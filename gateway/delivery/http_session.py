"""The one aiohttp session a sink talks through: opened on first use, closed with the sink."""

from __future__ import annotations

import aiohttp


class LazySession:
    def __init__(self, timeout_seconds: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def get(self) -> aiohttp.ClientSession:
        # Created inside the running loop (aiohttp binds a session to it), not at import.
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
