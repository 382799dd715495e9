"""The count of requests being answered, which graceful shutdown waits on."""

from __future__ import annotations

import asyncio


class InFlight:
    """Counts requests being handled, so that shutdown can wait until there are none."""

    def __init__(self) -> None:
        self.count = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no request is in flight (callers bound the wait)."""
        await self._idle.wait()
